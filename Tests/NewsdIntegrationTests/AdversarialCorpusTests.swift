import Foundation
import NewsdIngest
import NewsdKafka
import NewsdPostgres
import Testing

/// Hostile messages, generated here (no fixture file): sizes at and past every limit, broken and
/// tricky encodings, deep nesting, odd numbers, control and invisible characters, injection
/// strings, duplicate keys, huge company lists. Through a live pipeline each is stored or rejected
/// with a reason; none stops ingest; none is lost.
enum AdversarialCorpus {
    /// (bytes, what it probes).
    static func messages() -> [(bytes: [UInt8], probe: String)] {
        var out: [(bytes: [UInt8], probe: String)] = []
        func add(_ s: String, _ probe: String) { out.append((Array(s.utf8), probe)) }
        func json(_ fields: String, _ probe: String) { add("{" + fields + "}", probe) }
        let limits = MessageParser.Limits()
        // Sizes at and just past every limit, in ASCII and in 4-byte characters.
        for (name, limit) in [("id", limits.idBytes), ("source", limits.sourceBytes)] {
            for n in [limit - 1, limit, limit + 1, limit * 40] {
                json(#""text": "Profit rose", "\#(name)": "\#(String(repeating: "a", count: n))""#, "\(name) of \(n) bytes")
            }
            json(#""text": "Profit rose", "\#(name)": "\#(String(repeating: "😀", count: limit / 4 + 1))""#, "\(name) in 4-byte characters past the limit")
        }
        for n in [limits.textBytes - 1, limits.textBytes, limits.textBytes + 1, 200_000] {
            json(#""text": "\#(String(repeating: "x", count: n))""#, "text of \(n) bytes")
        }
        json(#""text": "\#(String(repeating: "é", count: limits.textBytes / 2 + 1))""#, "text of 2-byte characters past the limit")
        for n in [limits.companyIdBytes, limits.companyIdBytes + 1] {
            json(#""text": "Profit rose", "companies": ["\#(String(repeating: "c", count: n))"]"#, "company id of \(n) bytes")
        }
        for n in [limits.companies, limits.companies + 1, 20_000] {
            json(#""text": "Profit rose", "companies": [\#((0..<n).map { "\"aurora\($0)\"" }.joined(separator: ","))]"#, "\(n) companies")
        }
        // Encodings.
        let invalidUTF8: [[UInt8]] = [[0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                                      [0x7B, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3A, 0x22, 0xC3, 0x22, 0x7D], [0xFE, 0xFF, 0x00, 0x61]]
        for b in invalidUTF8 { out.append((b, "invalid UTF-8 \(b.map { String($0, radix: 16) })")) }
        out.append(([0xEF, 0xBB, 0xBF] + Array(#"{"text": "Profit rose after a BOM"}"#.utf8), "UTF-8 BOM before JSON"))
        json(#""text": "lone surrogate \ud800 here""#, "lone surrogate escape")
        json(#""text": "pair \ud83d\ude00 ok""#, "surrogate pair escape")
        json(#""text": "nul \u0000 inside""#, "NUL escape in text")
        json(#""text": "ok", "id": "a\u0000b""#, "NUL escape in id")
        json(#""text": "ok", "source": "s\u0000""#, "NUL escape in source")
        json(#""text": "ok", "companies": ["a\u0000"]"#, "NUL escape in companies")
        // Nesting and structure.
        for depth in [10, 600, 100_000] {
            add(#"{"text": "Profit rose", "x": "# + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}", "nested \(depth) deep")
        }
        add(String(repeating: "[", count: 50_000), "unterminated deep array")
        for s in ["{}", "[]", "null", "true", "42", "\"text\"", "{\"text\": null}", "{\"text\": []}", "{\"text\": {}}", "{\"text\": true}",
                  "{\"text\": \"ok\",}", "{'text': 'single quotes'}", "{\"text\": \"ok\"} trailing", "{\"text\": \"ok\"}{\"text\": \"two\"}",
                  "{text: \"unquoted key\"}", "{\"text\": \"ok\" \"id\": \"1\"}", "{", "}", "{\"text\"", "{\"text\": \"a\\u12\"}",
                  "{\"text\": \"bad escape \\q\"}", "{\"TEXT\": \"wrong case\"}", "{\"text \": \"spaced key\"}"] {
            add(s, "structure \(s.prefix(30))")
        }
        json(#""text": "first", "text": "second""#, "duplicate text key")
        json(#""text": "ok", "id": "1", "id": 2"#, "duplicate id key")
        // Numbers.
        for id in ["1e400", "-0", "1.5", "-1", "9223372036854775808", "0x10", "NaN", "Infinity", "1e-400", "00012", "[1]", "{}", "true", "null"] {
            json(#""text": "Profit rose", "id": \#(id)"#, "id \(id)")
        }
        for t in ["\"2026-12-01T02:40:00Z\"", "\"2026-12-01\"", "\"0000-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59Z\"", "\"2026-13-45T99:99:99Z\"",
                  "\"yesterday\"", "1764556800", "\"\"", "null", "\"2026-12-01T02:40:00.123456789+14:00\"", "\"1969-12-31T23:59:59Z\""] {
            json(#""text": "Profit rose", "published_at": \#(t)"#, "published_at \(t)")
        }
        // Control, invisible and bidi characters.
        for s in ["\u{200B}", "\u{200B}\u{200C}\u{200D}\u{2060}", "\u{202E}evil\u{202C}", "\u{2066}\u{2069}", "\u{FEFF}", "\u{00AD}",
                  "\t\t", "\r\n", "\u{7F}", "\u{1B}[31mred\u{1B}[0m", "\u{0007}bell", "\u{FFFD}", "\u{E000}private", "\u{10FFFF}",
                  "tab\tinside", "new\nline", "back\\slash", "\u{2028}\u{2029}", "\u{3000}", "\u{0301}"] {
            let escaped = s.unicodeScalars.map { $0.value < 0x20 || $0 == "\\" || $0 == "\"" ? String(format: "\\u%04x", $0.value) : String($0) }.joined()
            json(#""text": "\#(escaped)""#, "characters \(s.unicodeScalars.map { String($0.value, radix: 16) })")
            add(s, "plain text \(s.unicodeScalars.map { String($0.value, radix: 16) })")
        }
        // Every C0 control character, escaped in JSON, alone and inside a sentence.
        for c in 1..<32 {
            json(#""text": "\#(String(format: "\\u%04x", c))", "id": "ctl-\#(c)\#(String(format: "\\u%04x", c))""#, "control U+\(String(format: "%04X", c)) alone")
            json(#""text": "Profit \#(String(format: "\\u%04x", c)) rose""#, "control U+\(String(format: "%04X", c)) in a sentence")
        }
        // Injection strings, in every field.
        let injections = ["'; DROP TABLE news_items; --", "\\\\N", "\\N", "\\.\n", "a\tb\tc", "$1", "%s%s%s%n", "{{text}}", "<script>alert(1)</script>",
                          "${jndi:ldap://x}", "' OR '1'='1", "Robert'); DROP TABLE predictions;--", "\u{0}", "COPY news_items FROM PROGRAM 'id'",
                          "..\\..\\..\\etc\\passwd", "../../etc/passwd", "\"quoted\"", "NULL", "null"]
        for s in injections {
            let e = s.unicodeScalars.map { $0.value < 0x20 || $0 == "\\" || $0 == "\"" ? String(format: "\\u%04x", $0.value) : String($0) }.joined()
            json(#""text": "Profit rose \#(e)", "id": "\#(e)", "source": "\#(e)", "companies": ["\#(e)"]"#, "injection \(s.prefix(20))")
            add("Profit rose " + s, "plain injection \(s.prefix(20))")
        }
        // Blank and near-blank messages.
        for s in ["", " ", "\n", "\t \n", "{ }", "  {\"text\": \"padded\"}  "] { add(s, "blank \(s.debugDescription)") }
        return out
    }
}

@Suite("Adversarial corpus through a live pipeline", .serialized)
struct AdversarialCorpusTests {
    @Test("each hostile message is stored or rejected with a reason; none stops ingest; none is lost")
    func corpusThroughTheLivePipeline() throws {
        let corpus = AdversarialCorpus.messages()
        #expect(corpus.count >= 200, "\(corpus.count) messages")
        let stream = try TestStream(topic: "hostile", partitions: 2)
        let good = Harness.goodMessages(200, prefix: "g")
        let producer = try KafkaProducer(brokers: stream.cluster.bootstrapServers, properties: ["log_level": "2", "message.max.bytes": "10000000"])
        // Good messages before, between and after the hostile ones: the stream must go on past each.
        var sent = 0
        for (i, m) in corpus.enumerated() {
            if i % 2 == 0 { try producer.send(topic: stream.topic, key: Array("g\(i)".utf8), value: Array(good[i / 2].utf8)); sent += 1 }
            try producer.send(topic: stream.topic, key: Array("h\(i)".utf8), value: m.bytes); sent += 1
        }
        for m in good[((corpus.count + 1) / 2)...] { try producer.send(topic: stream.topic, value: Array(m.utf8)); sent += 1 }
        try producer.flush()
        let running = try RunningPipeline(Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic))
        let seen = try Harness.waitFor(stream.database, "SELECT (SELECT count(*) FROM news_items) + (SELECT count(*) FROM rejected_messages)", atLeast: sent, timeout: 120)
        #expect(running.stop())
        #expect(running.error == nil, "\(String(describing: running.error))")
        #expect(seen == sent, "\(seen) of \(sent) messages stored or rejected")
        let db = try PostgresConnection(stream.database)
        // Every good message stored; every rejection has a reason; no message twice.
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM news_items WHERE external_id LIKE 'g-%'") == 200)
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM rejected_messages WHERE reason IS NULL OR reason = ''") == 0)
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM (SELECT topic, partition, kafka_offset FROM news_items UNION ALL SELECT topic, partition, kafka_offset FROM rejected_messages) x") == sent)
        let reasons: [String] = try db.query("SELECT DISTINCT reason FROM rejected_messages ORDER BY 1").typed.map { try $0.decode("reason") }
        #expect(reasons.count >= 10, "\(reasons)")
        // The stored hostile texts were stored as sent (injection strings are data, not SQL).
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM news_items WHERE text = 'Profit rose ''; DROP TABLE news_items; --'") >= 1)
    }
}
