import Foundation
import NewsdDaemon
import NewsdDevTools
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The ingest acceptance tests, on real PostgreSQL and librdkafka's mock cluster. Serialized:
/// one of them restarts the Postgres server.
@Suite(.serialized) struct IngestTests {
    @Test func tenThousandMessagesOverFourPartitionsAreStoredExactlyOnce() throws {
        let stream = try TestStream(topic: "news", partitions: 4)
        let cluster = stream.cluster, db = stream.database
        let n = 10_000
        try Harness.produce(Harness.goodMessages(n, prefix: "m"), brokers: cluster.bootstrapServers, topic: "news")
        let running = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: db, topic: "news"))
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: n, timeout: 120)
        #expect(running.stop())
        let r = try Harness.exactlyOnceReport(db, expected: n)
        #expect(r.items == n && r.distinctIDs == n && r.predictions == n && r.itemsWithoutPrediction == 0, "\(r)")
        #expect(try Harness.count(db, "SELECT count(DISTINCT partition) FROM news_items") == 4)
        #expect(try Harness.count(db, "SELECT sum(next_offset)::int FROM consumer_offsets") == n)
        // Companies were linked (by name, alias or ticker, or given in the message).
        #expect(try Harness.count(db, "SELECT count(DISTINCT item_id) FROM mentions") == n)
    }

    @Test func malformedMessagesAreRejectedWithReasonsAndGoodOnesStored() throws {
        let stream = try TestStream(topic: "mixed", partitions: 2)
        let cluster = stream.cluster, db = stream.database
        let good = Harness.goodMessages(2000, prefix: "g")
        let bad: [String] = (0..<1000).map { i in
            switch i % 8 {
            case 0: return "{\"text\": \"unterminated"
            case 1: return "{\"id\": \"\(i)\"}"
            case 2: return "{\"text\": 42}"
            case 3: return "   "
            case 4: return "{\"text\": \"ok\", \"published_at\": \"yesterday\"}"
            case 5: return "{\"text\": \"fine\", \"source\": 7}"
            case 6: return "{\"text\": \"" + String(repeating: "x", count: 9000) + "\"}"
            default: return "{\"text\": \"a\", \"companies\": \"aurora\"}"
            }
        }
        // Interleaved: two good, one bad.
        var mixed: [String] = []
        for i in 0..<1000 { mixed += [good[2 * i], good[2 * i + 1], bad[i]] }
        try Harness.produce(mixed, brokers: cluster.bootstrapServers, topic: "mixed")
        // Plus raw invalid UTF-8, which a String cannot carry.
        let p = try KafkaProducer(brokers: cluster.bootstrapServers, properties: ["log_level": "2"])
        try p.send(topic: "mixed", value: [0x66, 0x6F, 0xFF, 0xFE, 0x6F])
        try p.flush()
        let running = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: db, topic: "mixed"))
        try Harness.waitFor(db, "SELECT (SELECT count(*) FROM news_items) + (SELECT count(*) FROM rejected_messages)", atLeast: 3001, timeout: 60)
        #expect(running.stop())
        #expect(try Harness.count(db, "SELECT count(*) FROM news_items") == 2000)
        #expect(try Harness.count(db, "SELECT count(*) FROM rejected_messages") == 1001)
        let reasons = try PostgresConnection(db).execute("SELECT reason, count(*) FROM rejected_messages GROUP BY reason ORDER BY reason").rows
        let text = reasons.map { "\($0[0] ?? ""): \($0[1] ?? "")" }.joined(separator: "\n")
        for expected in ["malformed JSON", "JSON has no \"text\"", "\"text\" is not a string", "empty text", "published_at",
                         "exceeds the limit", "\"companies\" is not an array", "\"source\" is not a string", "invalid UTF-8"] {
            #expect(text.contains(expected), "missing reason \(expected) in\n\(text)")
        }
        // Raw bytes are kept as received.
        #expect(try Harness.count(db, "SELECT count(*) FROM rejected_messages WHERE raw = decode('666ffffe6f', 'hex')") == 1)
    }

    @Test func sigkillAtThreeMomentsThenRestartStoresEverythingExactlyOnce() throws {
        let stream = try TestStream(topic: "crash", partitions: 4)
        let db = stream.database
        let n = 6000
        let config = try stream.daemonConfig()
        try stream.produce(Harness.goodMessages(n, prefix: "c"))
        var rng = SystemRandomNumberGenerator()
        for round in 0..<3 {
            let daemon = try DaemonProcess(config: config, name: "kill-\(round)")
            // Kill at a random point once this round has made some progress.
            let before = (try? Harness.count(db, "SELECT count(*) FROM news_items")) ?? 0
            let target = min(n - 1, before + 300 + Int(rng.next() % 1200))
            try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: target, timeout: 90)
            daemon.kill(SIGKILL)
            _ = daemon.wait(timeout: 10)
        }
        let last = try DaemonProcess(config: config, name: "final")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: n, timeout: 120)
        last.kill(SIGTERM)
        #expect(last.wait(timeout: 30) == 0)
        let r = try Harness.exactlyOnceReport(db, expected: n)
        #expect(r.items == n && r.distinctIDs == n && r.predictions == n && r.itemsWithoutPrediction == 0, "\(r)")
    }

    @Test func twoDaemonsShareThePartitionsAndOneTakesOverWhenTheOtherStops() throws {
        let stream = try TestStream(topic: "shared", partitions: 4)
        let cluster = stream.cluster, db = stream.database
        let config = try Harness.writeConfig(Harness.configuration(brokers: cluster.bootstrapServers, database: db, topic: "shared", group: "pair"))
        let a = try DaemonProcess(config: config, name: "a"), b = try DaemonProcess(config: config, name: "b")
        // Stream while both run, until both hold partitions and have written.
        let first = Harness.goodMessages(4000, prefix: "s1")
        try Harness.produce(Array(first[..<2000]), brokers: cluster.bootstrapServers, topic: "shared")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 2000, timeout: 90)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && !(a.logText.contains("partitions assigned") && b.logText.contains("partitions assigned")) { Thread.sleep(forTimeInterval: 0.2) }
        #expect(a.logText.contains("partitions assigned") && b.logText.contains("partitions assigned"), "both members get partitions")
        try Harness.produce(Array(first[2000...]), brokers: cluster.bootstrapServers, topic: "shared")
        // Stop one mid-stream; the other takes its partitions over.
        Thread.sleep(forTimeInterval: 0.3)
        a.kill(SIGTERM)
        #expect(a.wait(timeout: 30) == 0)
        let second = Harness.goodMessages(2000, prefix: "s2", seed: 9)
        try Harness.produce(second, brokers: cluster.bootstrapServers, topic: "shared")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 6000, timeout: 120)
        b.kill(SIGTERM)
        #expect(b.wait(timeout: 30) == 0)
        let r = try Harness.exactlyOnceReport(db, expected: 6000)
        #expect(r.items == 6000 && r.distinctIDs == 6000 && r.predictions == 6000, "\(r)")
        #expect(try Harness.count(db, "SELECT count(DISTINCT partition) FROM news_items WHERE external_id LIKE 's2-%'") == 4)
    }

    @Test func brokerFaultsAndPostgresRestartLoseAndDuplicateNothing() throws {
        let stream = try TestStream(topic: "faults", partitions: 4)
        // A private Postgres: restarting the shared one would cut the connections of the suites
        // running beside this one.
        let port = 31_333
        let (db, pgctl) = try Harness.privatePostgres(port: port)
        defer { Harness.removePrivatePostgres(port: port) }
        let cluster = stream.cluster
        let messages = Harness.goodMessages(6000, prefix: "f")
        try Harness.produce(Array(messages[..<2000]), brokers: cluster.bootstrapServers, topic: "faults")
        let running = try RunningPipeline(Harness.configuration(brokers: cluster.bootstrapServers, database: db, topic: "faults"))
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 500, timeout: 60)
        // Broker down for 3 s, then injected Fetch (api 1) and OffsetCommit (api 8) errors.
        try cluster.setBroker(1, up: false)
        Thread.sleep(forTimeInterval: 3)
        try cluster.setBroker(1, up: true)
        cluster.pushRequestErrors(apiKey: 1, count: 5, error: 7)
        cluster.pushRequestErrors(apiKey: 8, count: 3, error: 7)
        try Harness.produce(Array(messages[2000..<4000]), brokers: cluster.bootstrapServers, topic: "faults")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 2500, timeout: 60)
        // Postgres restart mid-stream.
        try Harness.produce(Array(messages[4000...]), brokers: cluster.bootstrapServers, topic: "faults")
        #expect(pgctl("restart") == 0)
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 6000, timeout: 120)
        #expect(running.stop())
        #expect(running.error == nil, "\(String(describing: running.error))")
        let r = try Harness.exactlyOnceReport(db, expected: 6000)
        #expect(r.items == 6000 && r.distinctIDs == 6000 && r.predictions == 6000 && r.itemsWithoutPrediction == 0, "\(r)")
    }

    @Test func sigtermMidStreamExitsZeroWithinTheBoundAndLosesNothing() throws {
        let stream = try TestStream(topic: "term", partitions: 2)
        let db = stream.database
        let n = 5000
        let config = try stream.daemonConfig()
        try stream.produce(Harness.goodMessages(n, prefix: "t"))
        let daemon = try DaemonProcess(config: config, name: "term")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 500, timeout: 60)
        let start = Date()
        daemon.kill(SIGTERM)
        let status = daemon.wait(timeout: 30)
        let took = Date().timeIntervalSince(start)
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(daemon.logText.suffix(2000))")
        #expect(took < 8 + 2, "stopped in \(took) s; the bound is shutdown_timeout_seconds = 8")
        #expect(daemon.logText.contains("left the consumer group"))
        let stored = try Harness.count(db, "SELECT count(*) FROM news_items")
        #expect(try Harness.count(db, "SELECT coalesce(sum(next_offset), 0)::int FROM consumer_offsets") == stored, "stored offsets match stored items")
        let again = try DaemonProcess(config: config, name: "term-2")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: n, timeout: 120)
        again.kill(SIGTERM)
        #expect(again.wait(timeout: 30) == 0)
        let r = try Harness.exactlyOnceReport(db, expected: n)
        #expect(r.items == n && r.distinctIDs == n && r.predictions == n, "\(r)")
    }

    @Test func metricsAndHealthAreServedForOperators() throws {
        let stream = try TestStream(topic: "ops", partitions: 2)
        let cluster = stream.cluster, db = stream.database
        var c = Harness.configuration(brokers: cluster.bootstrapServers, database: db, topic: "ops")
        let port = UInt16(try Harness.freePort())
        c.metrics.listen = "127.0.0.1:\(port)"
        let daemon = try DaemonProcess(config: try Harness.writeConfig(c), name: "ops")
        try Harness.produce(Harness.goodMessages(300, prefix: "o") + ["{broken"], brokers: cluster.bootstrapServers, topic: "ops")
        try Harness.waitFor(db, "SELECT count(*) FROM news_items", atLeast: 300, timeout: 60)
        Thread.sleep(forTimeInterval: 0.5)
        let metrics = try #require(Harness.httpGet(port: port, path: "/metrics"), "log:\n\(daemon.logText.suffix(1500))")
        #expect(metrics.status.contains("200"))
        #expect(metrics.body.contains("newsd_items_stored_total{topic=\"ops\"} 300"), "\(metrics.body)")
        #expect(metrics.body.contains("newsd_messages_rejected_total{topic=\"ops\",reason=\"malformed\"} 1"))
        #expect(metrics.body.contains("newsd_model_info{version=\"base\"} 1"))
        let health = try #require(Harness.httpGet(port: port, path: "/health"))
        #expect(health.status.contains("200"), "\(health)")
        #expect(Harness.httpGet(port: port, path: "/nope")?.status.contains("404") == true)
        daemon.kill(SIGTERM)
        #expect(daemon.wait(timeout: 30) == 0)
    }
}
