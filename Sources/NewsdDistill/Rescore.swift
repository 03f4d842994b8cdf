import Foundation
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// Classifies stored items again with a model, keeping the earlier predictions (one prediction per
/// item and model version; the `latest_predictions` view then shows the newest).
public enum Rescorer {
    /// Which items.
    public enum Selection: Sendable {
        /// Items published (or received) at or after this time.
        case since(Date)
        /// Items with no prediction from a registered (trained) model: what arrived during cold start.
        case withoutTrainedPrediction
    }

    /// Rescores in chunks of `chunk`; returns predictions added. Idempotent (re-running adds none).
    ///
    /// Every statement is bounded by the chunk, whatever the planner's statistics say: items are
    /// walked by id (a primary-key range), and which of them already have a prediction is asked
    /// by id list. An anti-join against `predictions` was the first design; right after a swap
    /// its statistics know no row of the new version, and the planner chose a plan quadratic in
    /// the predictions rescored so far: a chunk took longer than the shutdown bound. Ids are read
    /// 16 chunks at a time, so a walk over items that are all done costs two round trips per
    /// 8,192 items.
    ///
    /// `encoderShare` below 1 paces it: after a chunk whose classification took t seconds it
    /// waits t·(1/share − 1), so a model that also serves ingest keeps the rest of its time
    /// for ingest (the encoder serialises its callers). The wait ends early on `cancel`.
    @discardableResult
    public static func rescore(_ db: PostgresConnection, model: StudentModel, selection: Selection, chunk: Int = 512,
                               encoderShare: Double = 1, cancel: StopFlag? = nil, progress: (Int) -> Void = { _ in }) throws -> Int {
        var added = 0
        var after: Int64 = 0
        while true {
            // Stops between chunks on shutdown: every chunk is committed on its own, and a rerun
            // (the next start, or `newsd rescore`) continues where this one stopped.
            if cancel?.isSet == true { throw ModelError.cancelled("rescoring") }
            let window: [Int64]
            switch selection {
            case let .since(date):
                window = try db.execute("""
                    SELECT id FROM news_items WHERE id > $1::bigint
                      AND coalesce(published_at, received_at) >= to_timestamp($2::double precision)
                    ORDER BY id LIMIT \(chunk * 16)
                    """, [String(after), String(date.timeIntervalSince1970)]).typed.map { try $0.decode("id") }
            case .withoutTrainedPrediction:
                window = try db.execute("SELECT id FROM news_items WHERE id > $1::bigint ORDER BY id LIMIT \(chunk * 16)", [String(after)])
                    .typed.map { try $0.decode("id") }
            }
            guard let last = window.last else { return added }
            // Items of the window already done: by this model, or (for the cold-start backfill)
            // by any registered model. Registered versions are read per chunk: a promotion
            // meanwhile counts at once.
            let versions: [String]
            switch selection {
            case .since: versions = [model.version]
            case .withoutTrainedPrediction:
                versions = try db.execute("SELECT version FROM models").typed.map { try $0.decode("version") } + [model.version]
            }
            let done = Set(try db.execute("""
                SELECT DISTINCT item_id FROM predictions WHERE item_id = ANY($1::bigint[]) AND model_version = ANY($2::text[])
                """, [Self.arrayLiteral(window.map(String.init)), Self.arrayLiteral(versions.map(Self.quotedElement))])
                .typed.map { (try $0.decode("item_id")) as Int64 })
            var todo = window.filter { !done.contains($0) }
            if todo.count > chunk { todo = Array(todo.prefix(chunk)) }
            // The next window starts after this chunk (the rest of this window is read again).
            after = todo.count == chunk ? todo[chunk - 1] : last
            if todo.isEmpty { continue }
            let rows = try db.execute("SELECT id, text FROM news_items WHERE id = ANY($1::bigint[]) ORDER BY id",
                                      [Self.arrayLiteral(todo.map(String.init))]).typed
            let ids: [Int64] = try rows.map { try $0.decode("id") }, texts: [String] = try rows.map { try $0.decode("text") }
            let classifyStart = monotonicSeconds()
            let predictions = model.predict(texts, cached: false)
            let classifySeconds = monotonicSeconds() - classifyStart
            var copy = ""
            for (id, p) in zip(ids, predictions) {
                let probabilities = p.probabilitiesJSON(labels: model.labels)
                copy += CopyText.row([String(id), model.version, p.label, probabilities, String(p.margin), String(p.entropy)])
            }
            added += try db.transaction {
                try db.execute("CREATE TEMP TABLE IF NOT EXISTS rescore_stage (item_id bigint, model_version text, label text, probabilities jsonb, margin real, entropy real) ON COMMIT DELETE ROWS")
                try db.copyIn("COPY rescore_stage FROM STDIN", data: copy)
                return try db.execute("""
                    INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, rescored)
                    SELECT item_id, model_version, label, probabilities, margin, entropy, true FROM rescore_stage
                    ON CONFLICT (item_id, model_version) DO NOTHING
                    """).affected
            }
            progress(added)
            if encoderShare < 1 {
                let resume = monotonicSeconds() + classifySeconds * (1 / max(encoderShare, 0.01) - 1)
                while monotonicSeconds() < resume, cancel?.isSet != true { Thread.sleep(forTimeInterval: min(0.1, max(0, resume - monotonicSeconds()))) }
            }
        }
    }

    /// A PostgreSQL array literal of already-quoted or numeric elements: `{a,b}`.
    static func arrayLiteral(_ elements: [String]) -> String { "{" + elements.joined(separator: ",") + "}" }

    /// One text element of an array literal, double-quoted with `"` and `\` escaped.
    static func quotedElement(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
