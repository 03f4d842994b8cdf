import Foundation
import NewsdCore
import NewsdModel
import NewsdPostgres

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

    static let columns = "version, seq, parent, status, created_at::text, activated_at::text, label_counts::text, training::text, metrics::text, reasons"

    static func row(_ r: [String?]) -> RegisteredModel {
        RegisteredModel(version: r[0] ?? "", seq: Int(r[1] ?? "0") ?? 0, parent: r[2], status: r[3] ?? "", createdAt: r[4] ?? "",
                        activatedAt: r[5], labelCounts: r[6] ?? "{}", training: r[7] ?? "{}", metrics: r[8] ?? "{}", reasons: r[9])
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
            let seq = Int(try db.execute("SELECT coalesce(max(seq), 0) + 1 FROM models").rows[0][0] ?? "1") ?? 1
            try db.execute("""
                INSERT INTO models (version, seq, parent, status, label_counts, training, metrics, checksum, reasons)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9)
                """, [version, String(seq), parent, status, TeacherQueue.jsonText(labelCounts), training,
                      TeacherQueue.jsonText(metrics.filter { $0.value.isFinite }), manifest.checksum, reasons])
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
        let r = try db.execute("SELECT \(columns) FROM models WHERE version = $1 OR seq::bigint = $2::bigint ORDER BY seq LIMIT 1",
                               [key, seq.map(String.init) ?? "-1"]).rows
        return r.first.map(row)
    }

    /// All versions, newest first.
    public static func list(_ db: PostgresConnection) throws -> [RegisteredModel] {
        try db.execute("SELECT \(columns) FROM models ORDER BY seq DESC").rows.map(row)
    }

    /// The active version, if any.
    public static func active(_ db: PostgresConnection) throws -> RegisteredModel? {
        try db.execute("SELECT \(columns) FROM models WHERE status = 'active'").rows.first.map(row)
    }

    /// Makes `version` active (the active one becomes retired) and notifies every host.
    public static func promote(_ db: PostgresConnection, _ version: String) throws {
        try db.transaction {
            try db.execute("SELECT pg_advisory_xact_lock($1)", [String(Schema.migrationLock + 1)])
            guard try db.execute("SELECT 1 FROM models WHERE version = $1", [version]).rows.count == 1 else {
                throw ServiceError("no model version \(version)")
            }
            try db.execute("UPDATE models SET status = 'retired' WHERE status = 'active' AND version <> $1", [version])
            try db.execute("UPDATE models SET status = 'active', activated_at = now(), reasons = NULL WHERE version = $1", [version])
            try db.execute("SELECT pg_notify($1, $2)", [channel, version])
        }
    }

    /// Makes the previously active version active again; the current one is retired with the
    /// reason. Returns the version now active.
    @discardableResult
    public static func rollback(_ db: PostgresConnection, reason: String = "rolled back") throws -> String {
        try db.transaction {
            try db.execute("SELECT pg_advisory_xact_lock($1)", [String(Schema.migrationLock + 1)])
            guard let current = try db.execute("SELECT version FROM models WHERE status = 'active'").rows.first?[0] else {
                throw ServiceError("no active model to roll back")
            }
            guard let previous = try db.execute("""
                SELECT version FROM models WHERE status = 'retired' AND activated_at IS NOT NULL AND version <> $1
                  AND reasons IS NULL   -- never back to a model that was itself rolled back
                ORDER BY activated_at DESC LIMIT 1
                """, [current ?? ""]).rows.first?[0] else {
                throw ServiceError("no previously active model to roll back to")
            }
            try db.execute("UPDATE models SET status = 'retired', reasons = $2 WHERE version = $1", [current, reason])
            try db.execute("UPDATE models SET status = 'active', activated_at = now() WHERE version = $1", [previous])
            try db.execute("SELECT pg_notify($1, $2)", [channel, previous ?? ""])
            return previous ?? ""
        }
    }

    /// Writes a version's files under `cache/<version>` (atomically) and returns the directory.
    /// The caller verifies it by loading it (`Artifact.load` checks every checksum).
    public static func materialize(_ db: PostgresConnection, version: String, cache: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: cache, withIntermediateDirectories: true)
        let target = cache.appendingPathComponent(version)
        let files = try db.execute("SELECT name, encode(content, 'base64') FROM model_files WHERE version = $1", [version]).rows
        guard !files.isEmpty else { throw ServiceError("model \(version) has no stored files") }
        let tmp = cache.appendingPathComponent(".\(version).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        for f in files {
            guard let name = f[0], !name.contains("/"), let data = Data(base64Encoded: f[1] ?? "", options: .ignoreUnknownCharacters) else {
                throw ServiceError("model \(version): a stored file is unreadable")
            }
            try data.write(to: tmp.appendingPathComponent(name))
        }
        try? fm.removeItem(at: target)
        try fm.moveItem(at: tmp, to: target)
        return target
    }
}
