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
    @discardableResult
    public static func rescore(_ db: PostgresConnection, model: StudentModel, selection: Selection, chunk: Int = 512,
                               cancel: StopFlag? = nil, progress: (Int) -> Void = { _ in }) throws -> Int {
        let condition: String
        var parameters: [String?] = [model.version]
        switch selection {
        case let .since(date):
            condition = "coalesce(n.published_at, n.received_at) >= to_timestamp($3::double precision)"
            parameters.append(nil)
            parameters.append(String(date.timeIntervalSince1970))
        case .withoutTrainedPrediction:
            condition = "NOT EXISTS (SELECT 1 FROM predictions q JOIN models m ON m.version = q.model_version WHERE q.item_id = n.id)"
            parameters.append(nil)
        }
        var added = 0
        var after: Int64 = 0
        while true {
            // Stops between chunks on shutdown: every chunk is committed on its own, and a rerun
            // (the next start, or `newsd rescore`) continues where this one stopped.
            if cancel?.isSet == true { throw ModelError.cancelled("rescoring") }
            parameters[1] = String(after)
            let rows = try db.execute("""
                SELECT n.id, n.text FROM news_items n
                WHERE n.id > $2::bigint AND \(condition)
                  AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.item_id = n.id AND p.model_version = $1)
                ORDER BY n.id LIMIT \(chunk)
                """, parameters).typed
            guard !rows.isEmpty else { return added }
            let ids: [Int64] = try rows.map { try $0.decode("id") }, texts: [String] = try rows.map { try $0.decode("text") }
            let predictions = model.predict(texts, cached: false)
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
            after = ids.last!
            progress(added)
        }
    }
}
