import Foundation
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// One registry row.
public struct RegisteredModel: Sendable {
    /// Artifact checksum prefix (what predictions record).
    public var version: String
    /// 1, 2, ... (shown as v1, v2).
    public var seq: Int
    /// The model active when it was trained.
    public var parent: String?
    /// candidate, active, retired or rejected.
    public var status: String
    /// When it was registered and last made active.
    public var createdAt: String, activatedAt: String?
    /// Labels by source, training configuration, metrics (JSON text).
    public var labelCounts: String, training: String, metrics: String
    /// Why it was rejected or rolled back.
    public var reasons: String?
}

/// The model registry: versions with their lineage, metrics and status, and their artifact files
/// in Postgres (`model_files`), so every host loads exactly what was evaluated. Promotion and
/// rollback change the one active row and `NOTIFY newsd_models` in the same transaction.
public enum ModelRegistry {
    /// The notification channel hosts listen on.
    public static let channel = "newsd_models"

    static let columns = """
        version, seq, parent, status, created_at::text AS created_at, activated_at::text AS activated_at,
        label_counts::text AS label_counts, training::text AS training, metrics::text AS metrics, reasons
        """

    static func row(_ r: PostgresRow) throws -> RegisteredModel {
        RegisteredModel(version: try r.decode("version"), seq: try r.decode("seq"), parent: try r.decode("parent"), status: try r.decode("status"),
                        createdAt: try r.decode("created_at"), activatedAt: try r.decode("activated_at"), labelCounts: try r.decode("label_counts"),
                        training: try r.decode("training"), metrics: try r.decode("metrics"), reasons: try r.decode("reasons"))
    }

    /// Stores an artifact directory as a new version with `status`; returns it. Storing a version
    /// again (the same checksum) is refused.
    public static func register(_ db: PostgresConnection, artifact: URL, parent: String?, status: String,
                                labelCounts: [String: Int], metrics: [String: Double], reasons: String?) throws -> RegisteredModel {
        let manifest = try Artifact.verifiedManifest(directory: artifact)
        let version = String(manifest.checksum.prefix(12))
        let training = String(decoding: try JSONEncoder().encode(manifest.training), as: UTF8.self)
        let names = try FileManager.default.contentsOfDirectory(atPath: artifact.path).filter { !$0.hasPrefix(".") }.sorted()
        return try db.transaction {
            let seq: Int = try db.query("SELECT coalesce(max(seq), 0) + 1 AS seq FROM models").single().decode("seq")
            let counts = try JSONText.encode(labelCounts), figures = try JSONText.encode(metrics.filter { $0.value.isFinite })
            try db.query("""
                INSERT INTO models (version, seq, parent, status, label_counts, training, metrics, checksum, reasons)
                VALUES (\(version), \(seq), \(parent), \(status), \(counts)::jsonb, \(training)::jsonb, \(figures)::jsonb, \(manifest.checksum), \(reasons))
                """)
            var copy = ""
            for name in names {
                let bytes = [UInt8](try Data(contentsOf: artifact.appendingPathComponent(name)))
                copy += CopyText.row([version, name, CopyText.bytea(bytes)])
            }
            try db.copyIn("COPY model_files (version, name, content) FROM STDIN", data: copy)
            return try get(db, version)!
        }
    }

    /// A version by checksum prefix, `vN` or `N`.
    public static func get(_ db: PostgresConnection, _ key: String) throws -> RegisteredModel? {
        let seq = Int(key.hasPrefix("v") ? String(key.dropFirst()) : key)
        return try db.query("SELECT \(unescaped: columns) FROM models WHERE version = \(key) OR seq::bigint = \(seq ?? -1)::bigint ORDER BY seq LIMIT 1")
            .typed.first.map(row)
    }

    /// All versions, newest first.
    public static func list(_ db: PostgresConnection) throws -> [RegisteredModel] {
        try db.query("SELECT \(unescaped: columns) FROM models ORDER BY seq DESC").typed.map(row)
    }

    /// The active version, if any.
    public static func active(_ db: PostgresConnection) throws -> RegisteredModel? {
        try db.query("SELECT \(unescaped: columns) FROM models WHERE status = 'active'").typed.first.map(row)
    }

    /// Makes `version` active (the active one becomes retired) and notifies every host.
    public static func promote(_ db: PostgresConnection, _ version: String) throws {
        try db.transaction {
            try db.query("SELECT pg_advisory_xact_lock(\(AdvisoryLock.registry))")
            guard try db.query("SELECT 1 FROM models WHERE version = \(version)").rows.count == 1 else {
                throw DistillError("no model version \(version)")
            }
            try db.query("UPDATE models SET status = 'retired' WHERE status = 'active' AND version <> \(version)")
            try db.query("UPDATE models SET status = 'active', activated_at = now(), reasons = NULL WHERE version = \(version)")
            try db.query("SELECT pg_notify(\(channel), \(version))")
        }
    }

    /// Makes the previously active version active again; the current one is retired with the
    /// reason. Returns the version now active.
    @discardableResult
    public static func rollback(_ db: PostgresConnection, reason: String = "rolled back") throws -> String {
        let (current, previous) = try switchBack(db, reason: reason)
        try withdraw(db, version: current)
        return previous
    }

    /// Marks `version`'s predictions withdrawn in chunks of `chunk` (short transactions: ingest
    /// and the analysts' rollups go on meanwhile; the update trigger notes the hours to
    /// recompute). Run again after an interruption, it finishes the rest.
    public static func withdraw(_ db: PostgresConnection, version: String, chunk: Int = 20_000) throws {
        while try db.query("""
            UPDATE predictions SET withdrawn = true
            WHERE id IN (SELECT id FROM predictions WHERE model_version = \(version) AND NOT withdrawn LIMIT \(chunk))
            """).affected > 0 {}
    }

    /// The registry part of a rollback: one transaction; returns (rolled back, now active).
    static func switchBack(_ db: PostgresConnection, reason: String) throws -> (String, String) {
        try db.transaction {
            try db.query("SELECT pg_advisory_xact_lock(\(AdvisoryLock.registry))")
            guard let current: String = try db.query("SELECT version FROM models WHERE status = 'active'").typed.first?.decode("version") else {
                throw DistillError("no active model to roll back")
            }
            guard let previous: String = try db.query("""
                SELECT version FROM models WHERE status = 'retired' AND activated_at IS NOT NULL AND version <> \(current)
                  AND reasons IS NULL   -- never back to a model that was itself rolled back
                ORDER BY activated_at DESC LIMIT 1
                """).typed.first?.decode("version") else {
                throw DistillError("no previously active model to roll back to")
            }
            try db.query("UPDATE models SET status = 'retired', reasons = \(reason) WHERE version = \(current)")
            try db.query("UPDATE models SET status = 'active', activated_at = now() WHERE version = \(previous)")
            try db.query("SELECT pg_notify(\(channel), \(previous))")
            // After the switch (hosts swap at once), the rolled-back model's predictions stop
            // counting where an item has another one: see `withdraw`.
            return (current, previous)
        }
    }

    /// Writes a version's files under `cache/<version>` (atomically) and returns the directory.
    /// The caller verifies it by loading it (`Artifact.load` checks every checksum).
    public static func materialize(_ db: PostgresConnection, version: String, cache: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: cache, withIntermediateDirectories: true)
        let target = cache.appendingPathComponent(version)
        let files = try db.query("SELECT name, encode(content, 'base64') AS content FROM model_files WHERE version = \(version)").typed
        guard !files.isEmpty else { throw DistillError("model \(version) has no stored files") }
        // Written aside, then renamed into place in one step: a reader sees the whole version or
        // none of it. Versions are content-addressed, so a directory another host or thread put
        // there first is kept (the loader verifies every checksum either way).
        let tmp = DurableFiles.sibling(of: target, tag: "tmp")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        for f in files {
            let name: String = try f.decode("name"), content: String = try f.decode("content")
            guard !name.contains("/"), !name.hasPrefix("."), let data = Data(base64Encoded: content, options: .ignoreUnknownCharacters) else {
                throw DistillError("model \(version): a stored file is unreadable")
            }
            try data.write(to: tmp.appendingPathComponent(name))
        }
        try DurableFiles.replaceDirectory(target, with: tmp, keepExistingIf: { (try? Artifact.verifiedManifest(directory: $0)) != nil })
        return target
    }
}
