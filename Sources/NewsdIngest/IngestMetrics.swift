import Foundation
import NewsdModel

extension IngestPipeline {
    /// The pipeline's figures in Prometheus text format.
    public func prometheusText() -> String {
        let s = statistics
        let model = activeModel
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, v) in samples { out += "\(name)\(labels) \(v)\n" }
        }
        metric("newsd_messages_consumed_total", "counter", "Kafka messages consumed.", [("", Double(s.consumed))])
        metric("newsd_items_stored_total", "counter", "News items stored with a prediction.", [("", Double(s.stored))])
        metric("newsd_messages_rejected_total", "counter", "Messages stored in rejected_messages.", [("", Double(s.rejected))])
        metric("newsd_batches_total", "counter", "Micro-batches written.", [("", Double(s.batches))])
        metric("newsd_database_failures_total", "counter", "Postgres failures (each retried).", [("", Double(s.databaseFailures))])
        metric("newsd_stage_seconds_total", "counter", "Seconds spent per ingest stage.",
               [("{stage=\"poll\"}", s.pollSeconds), ("{stage=\"parse\"}", s.parseSeconds),
                ("{stage=\"classify\"}", s.classifySeconds), ("{stage=\"write\"}", s.writeSeconds)])
        metric("newsd_batch_latency_seconds", "summary", "Batch latency from first message to commit (last 10,000 batches).",
               [("{quantile=\"0.5\"}", s.latencyMilliseconds(0.5) / 1000), ("{quantile=\"0.99\"}", s.latencyMilliseconds(0.99) / 1000)])
        metric("newsd_model_info", "gauge", "The student model serving.", [("{version=\"\(model.version)\"}", 1)])
        metric("newsd_model_swaps_total", "counter", "Models swapped in while running.", [("", Double(serving.counts.swaps))])
        metric("newsd_model_swap_failures_total", "counter", "Promoted models refused by this host (corrupt or unloadable); it kept its model.", [("", Double(serving.counts.refused))])
        metric("newsd_partition_offset_restarts_total", "counter", "Partitions whose offsets went back (topic recreated or broker data lost); their messages are stored under topic#N.", [("", Double(s.offsetRestarts))])
        metric("newsd_unknown_companies_total", "counter", "Company ids named by messages but not in the portfolio, dropped.", [("", Double(s.unknownCompaniesDropped))])
        metric("newsd_mentions_dropped_total", "counter", "Mentions past ingest.max_mentions, dropped.", [("", Double(s.mentionsDropped))])
        metric("newsd_teacher_items_queued_total", "counter", "Items this host put on the teacher queue.", [("", Double(s.queuedForTeacher))])
        metric("newsd_kafka_up", "gauge", "1 unless librdkafka reports the brokers unreachable.", [("", health.kafkaUp ? 1 : 0)])
        metric("newsd_postgres_up", "gauge", "1 unless the last Postgres attempt failed.", [("", health.postgresUp ? 1 : 0)])
        metric("newsd_assigned_partitions", "gauge", "Partitions assigned to this host.", [("", Double(health.assignedPartitions))])
        return out
    }

    /// Health for `/health`: consuming (subscribed, brokers reachable) and Postgres answering.
    public func healthReport() -> (healthy: Bool, text: String) {
        let h = health
        let healthy = h.running && h.kafkaUp && h.postgresUp
        return (healthy, "running=\(h.running) kafka_up=\(h.kafkaUp) postgres_up=\(h.postgresUp) partitions=\(h.assignedPartitions) model=\(activeModel.version)")
    }
}
