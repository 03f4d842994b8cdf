import Foundation
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import Testing

/// A message must never be able to stop ingest: what passes the parser but is refused by the
/// database is found by bisecting the batch and stored as rejected with its SQLSTATE.
@Suite("Poison messages", .serialized)
struct PoisonMessageTests {
    /// Before the fix: SQLSTATE 54000 (index row too big) failed the whole batch and the daemon
    /// exited, to read the same message again after its restart: every host crash-looped.
    @Test("a row the database refuses is bisected out: the rest of the batch is stored, it is rejected with its SQLSTATE")
    func databaseRefusalIsBisectedOut() throws {
        let database = try Harness.freshDatabase()
        try Schema.migrate(try PostgresConnection(database))
        let store = IngestStore(url: database, groupID: "poison", logger: Harness.logger)
        let p = Prediction(probabilities: [0.1, 0.8, 0.1], labels: ["negative", "neutral", "positive"])
        var rng = SystemRandomNumberGenerator()
        // Incompressible: a repeated letter compresses below the index limit and slips through.
        let poisonID = String((0..<10_000).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x21...0x7E, using: &rng))) })
        let batch: [ProcessedMessage] = (0..<64).map { i in
            let item = NewsItem(externalID: i == 37 ? poisonID : "ok-\(i)", text: "Profit rose \(i) percent", publishedAt: nil, source: "t", companies: [])
            return ProcessedMessage(topicPartition: TopicPartition(topic: "news", partition: Int32(i % 2)), offset: Int64(i / 2),
                                    raw: Array("m\(i)".utf8), outcome: .accepted(item, p, []))
        }
        let r = try store.write(batch, modelVersion: "base", labels: p.probabilities.indices.map { ["negative", "neutral", "positive"][$0] })
        #expect(r.inserted == 63 && r.rejected == 1, "\(r)")
        let db = try PostgresConnection(database)
        let reason: String = try db.query("SELECT reason FROM rejected_messages").single().decode("reason")
        #expect(reason.contains("SQLSTATE 54000"), "\(reason)")
        // Offsets cover the whole batch: nothing is read again, nothing lost.
        let next: [Int64] = try db.query("SELECT next_offset FROM consumer_offsets ORDER BY partition").typed.map { try $0.decode("next_offset") }
        #expect(next == [32, 32])
    }

    @Test("oversize ids, sources and company lists, unknown companies and invisible texts go to rejected_messages; the stream goes on")
    func hostileFieldsThroughTheLivePipeline() throws {
        let stream = try TestStream(topic: "poison", partitions: 2)
        let good = Harness.goodMessages(300, prefix: "g")
        var rng = SystemRandomNumberGenerator()
        let random = String((0..<10_000).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x61...0x7A, using: &rng))) })
        let many = (0..<20_000).map { "\"c\($0)\"" }.joined(separator: ",")
        let hostile = [
            #"{"id": "\#(random)", "text": "Profit rose"}"#,
            #"{"text": "Profit rose", "companies": ["\#(random)"]}"#,
            #"{"text": "Profit rose", "companies": [\#(many)]}"#,
            #"{"text": "Profit rose", "source": "\#(random)"}"#,
            "{\"text\": \"\u{200B}\u{202E}\u{FEFF}\"}",
            #"{"text": "Profit rose", "published_at": "0000-01-01T00:00:00Z"}"#,
        ]
        try stream.produce(Array(good[..<150]) + hostile + Array(good[150...]))
        // Unknown company ids are dropped and counted (the portfolio is the demo one).
        try stream.produce([#"{"id": "u1", "text": "Sales fell", "companies": ["no-such-company", "aurora"]}"#])
        let running = try RunningPipeline(Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic))
        let total = 300 + hostile.count + 1
        try Harness.waitFor(stream.database, "SELECT (SELECT count(*) FROM news_items) + (SELECT count(*) FROM rejected_messages)", atLeast: total, timeout: 60)
        #expect(running.stop())
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM news_items") == 301)
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM rejected_messages") == hostile.count)
        #expect(running.pipeline.statistics.unknownCompaniesDropped == 1)
        let companies = try Harness.count(stream.database, "SELECT count(*) FROM mentions m JOIN news_items n ON n.id = m.item_id WHERE n.external_id = 'u1' AND m.company_id = 'no-such-company'")
        #expect(companies == 0)
    }
}
