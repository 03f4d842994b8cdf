import Foundation
import NewsdDevTools
import NewsdIngest
import NewsdKafka
import NewsdOps
import NewsdPostgres
import Testing

/// A partition whose offsets start again (the topic deleted and recreated, or a broker that lost
/// its log) must not have its new messages dropped as replays of stored ones.
@Suite("Topic recreation and broker data loss", .serialized)
struct TopicRestartTests {
    /// Before: the new messages reused stored (topic, partition, offset) keys and `ON CONFLICT DO
    /// NOTHING` dropped them: 400 consumed, 0 stored, 0 rejected.
    @Test("offsets that go back open a new incarnation: every new message stored once, none lost, none doubled")
    func recreatedTopicLosesNothing() throws {
        let database = try Harness.freshDatabase()
        let topic = "recreate"
        func run(_ cluster: MockCluster, until total: Int) throws -> IngestStatistics {
            let running = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: database, topic: topic))
            let got = try Harness.waitFor(database, "SELECT count(*) FROM news_items", atLeast: total, timeout: 60)
            #expect(running.stop())
            #expect(got == total, "\(got) of \(total) stored")
            return running.pipeline.statistics
        }
        // The first life of the topic: 400 messages.
        let first = try MockCluster(brokers: 1)
        try first.createTopic(topic, partitions: 1)
        try Harness.produce(Harness.goodMessages(400, prefix: "first"), brokers: first.bootstrapServers, topic: topic)
        _ = try run(first, until: 400)
        // Recreated (here: a cluster that lost everything): 300 new messages at offsets 0..299,
        // below the stored next offset 400.
        let second = try MockCluster(brokers: 1)
        try second.createTopic(topic, partitions: 1)
        try Harness.produce(Harness.goodMessages(300, prefix: "second", seed: 2), brokers: second.bootstrapServers, topic: topic)
        let stats = try run(second, until: 700)
        #expect(stats.offsetRestarts == 1)
        // A restart on the new topic goes on from where its incarnation stopped.
        try Harness.produce(Harness.goodMessages(100, prefix: "third", seed: 3), brokers: second.bootstrapServers, topic: topic)
        let again = try run(second, until: 800)
        #expect(again.offsetRestarts == 0)
        #expect(try Harness.count(database, "SELECT count(*) FROM news_items WHERE topic = 'recreate#1'") == 400)
        #expect(try Harness.count(database, "SELECT count(DISTINCT external_id) FROM news_items") == 800)
        #expect(try Harness.count(database, "SELECT count(*) FROM topic_incarnations") == 1)
        #expect(try Harness.count(database, "SELECT count(*) FROM rejected_messages") == 0)
    }

    /// Before: when the broker had deleted offsets the group had not read yet (retention while it
    /// lagged or was down), librdkafka's offset reset moved past them with no newsd log and no
    /// metric (only librdkafka's own line on stderr).
    @Test("offsets deleted before they were read are counted and logged, and every offset is accounted for")
    func offsetsDeletedByRetentionAreCounted() throws {
        let database = try Harness.freshDatabase()
        let topic = "retention"
        let cluster = try MockCluster(brokers: 1)
        try cluster.createTopic(topic, partitions: 1)
        try Harness.produce(Harness.goodMessages(100, prefix: "before"), brokers: cluster.bootstrapServers, topic: topic)
        let first = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: database, topic: topic))
        #expect(try Harness.waitFor(database, "SELECT count(*) FROM news_items", atLeast: 100, timeout: 60) == 100)
        #expect(first.stop())
        // While the group is away, 8.1 MB arrive: more than librdkafka's mock partition keeps
        // (5 MB), so the oldest, stored next offset 100 among them, are deleted. The filler is
        // over `ingest.max_text_bytes` (rejected unread by the student); the last 100 are good news.
        let filler = (0..<900).map { "filler \($0) " + String(repeating: "x", count: 9_000) }
        try Harness.produce(filler + Harness.goodMessages(100, prefix: "after", seed: 2), brokers: cluster.bootstrapServers, topic: topic)
        let second = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: database, topic: topic))
        #expect(try Harness.waitFor(database, "SELECT count(*) FROM news_items", atLeast: 200, timeout: 60) == 200)
        #expect(second.stop())
        let stats = second.pipeline.statistics
        #expect(stats.offsetsSkipped > 0)
        // Every offset after the stored one was either read or counted as skipped.
        #expect(stats.consumed + stats.offsetsSkipped == 1_000)
        #expect(stats.offsetRestarts == 0)
        let text = String(decoding: second.pipeline.metrics.render(), as: UTF8.self)
        #expect(text.contains("newsd_offsets_skipped_total{topic=\"retention\"} \(stats.offsetsSkipped)"), "\(text.split(separator: "\n").filter { $0.contains("skipped") })")
    }
}
