import Foundation
import Testing
@testable import NewsdCore

@Suite struct CSVTests {
    @Test func quotedFieldsWithCommasQuotesAndNewlines() throws {
        let t = try CSVTable(parsing: "text,label\n\"a, \"\"b\"\"\nc\",positive\r\nplain,neutral\n")
        #expect(t.header == ["text", "label"])
        #expect(t.rows == [["a, \"b\"\nc", "positive"], ["plain", "neutral"]])
        #expect(try CSVTable(parsing: t.csvText()).rows == t.rows)
    }

    @Test func wrongFieldCountNamesTheRecord() {
        #expect(throws: CoreError.self) { try CSVTable(parsing: "a,b\n1,2\n3\n", source: "x.csv") }
    }

    @Test func votesBecomeSoftLabels() throws {
        let t = try CSVTable(parsing: "text,label,s1,s2,s3\nup,positive,positive,positive,neutral\nflat,neutral,none,neutral,neutral\n")
        let d = try LabelledData(table: t, textColumn: "text", labelColumn: "label", softLabelColumns: ["s1", "s2", "s3"])
        #expect(d.labels == ["neutral", "positive"])
        #expect(d.targets[0] == [1.0 / 3, 2.0 / 3])
        #expect(d.targets[1] == [1, 0])
    }

    @Test func validationSplitIsStableAndSized() {
        let texts = (0..<10_000).map { "sentence number \($0)" }
        let held = texts.filter { TextHash.isValidation($0, fraction: 0.1) }.count
        #expect(held > 900 && held < 1100)
        #expect(TextHash.fnv1a("Profit  ROSE ") == TextHash.fnv1a("profit rose"))
    }
}

@Suite struct MessageAndConfigurationTests {
    let parser = MessageParser(maxTextBytes: 100)

    @Test func jsonAndPlainTextMessages() throws {
        let item = try parser.parse(Array(#"{"id": 7, "text": " Profit rose ", "published_at": "2026-01-02T03:04:05Z", "source": "wire", "companies": ["a"]}"#.utf8)).get()
        #expect(item.externalID == "7" && item.text == "Profit rose" && item.source == "wire" && item.companies == ["a"])
        #expect(item.publishedAt == Date(timeIntervalSince1970: 1_767_323_045))
        #expect(try parser.parse(Array("  plain text line\n".utf8)).get().text == "plain text line")
    }

    @Test(arguments: [
        (#"{"text": "x""#, "malformed JSON"), (#"{"id": "1"}"#, "no \"text\""), (#"{"text": 1}"#, "not a string"),
        ("  \n ", "empty text"), (#"{"id": "a\u0000b", "text": "x"}"#, "id contains a NUL"), (#"{"text": "a", "companies": "x"}"#, "companies"), (String(repeating: "y", count: 101), "exceeds"),
    ])
    func badMessagesAreRejectedWithAReason(message: String, reason: String) {
        guard case let .failure(r) = parser.parse(Array(message.utf8)) else { Issue.record("accepted \(message)"); return }
        #expect(r.description.contains(reason), "\(r)")
    }

    @Test func invalidUTF8IsRejected() {
        guard case let .failure(r) = parser.parse([0x61, 0xFF]) else { Issue.record("accepted"); return }
        #expect(r.description == "invalid UTF-8")
    }

    @Test func linkerMatchesNamesCaseInsensitivelyAndTickersExactlyAtWordBoundaries() {
        let linker = CompanyLinker([Company(id: "on", name: "Onsemi Corp", aliases: ["Onsemi"], tickers: ["ON"]),
                                    Company(id: "nokia", name: "Nokia", aliases: ["Nokia Oyj"], tickers: ["NOK1V"])])
        #expect(linker.link("NOKIA OYJ said sales rose").map(\.companyID) == ["nokia"])
        #expect(linker.link("Shares went on sale").isEmpty)                   // "on" is not the ticker ON
        #expect(linker.link("ON rose 5 %; Nokian Tyres fell").map(\.companyID) == ["on"])   // no match inside "Nokian"
        #expect(linker.link("onsemi and NOK1V", given: ["x"]).map(\.companyID) == ["x", "on", "nokia"])
    }

    @Test func tomlAndEnvironmentOverridesWithClearErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("newsd-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("c.toml")
        try """
        # comment
        [kafka]
        brokers = "a:1,b:2"   # two brokers
        topics = [
          "news",
          "more",
        ]
        [kafka.properties]
        "security.protocol" = "SASL_SSL"
        [model]
        dir = "\(dir.path)"
        threads = 4
        """.write(to: file, atomically: true, encoding: .utf8)
        let c = try NewsdConfiguration.load(file: file.path, environment: ["NEWSD_KAFKA_GROUP_ID": "g2", "NEWSD_MODEL_THREADS": "3"])
        #expect(c.kafka.brokers == "a:1,b:2" && c.kafka.topics == ["news", "more"] && c.kafka.groupID == "g2")
        #expect(c.kafka.properties["security.protocol"] == "SASL_SSL" && c.model.threads == 3)
        do {
            _ = try NewsdConfiguration.load(file: file.path, environment: ["NEWSD_MODEL_THREADS": "0"])
            Issue.record("accepted threads 0")
        } catch { #expect("\(error)" == "model.threads = 0: must be between 1 and 64") }
        try "[kafka]\nbrokerz = \"x:1\"\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: CoreError.self) { try NewsdConfiguration.load(file: file.path, environment: [:]) }
        try "[kafka]\nbrokers = x:1\n".write(to: file, atomically: true, encoding: .utf8)
        do { _ = try NewsdConfiguration.load(file: file.path, environment: [:]); Issue.record("accepted unquoted") } catch {
            #expect("\(error)".contains(":2:"), "error names the line: \(error)")
        }
    }

    @Test func teacherAndTrainerKeysWithReasons() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("newsd-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("c.toml")
        try """
        [model]
        dir = "\(dir.path)"
        [teacher]
        base_url = "http://llm:8000/v1"
        samples = 5
        use_n = false
        labels = ["bad", "good"]
        [trainer]
        mode = "separate"
        trainable = "top:3"
        """.write(to: file, atomically: true, encoding: .utf8)
        let c = try NewsdConfiguration.load(file: file.path, environment: ["NEWSD_TEACHER_DAILY_BUDGET_USD": "12.5", "NEWSD_TEACHER_WORKER": "no"])
        #expect(c.teacher.baseURL == "http://llm:8000/v1" && c.teacher.samples == 5 && !c.teacher.useN && c.teacher.labels == ["bad", "good"])
        #expect(c.teacher.dailyBudgetUSD == 12.5 && !c.teacher.worker && c.trainer.mode == "separate" && c.trainer.trainable == "top:3")
        func reason(_ env: [String: String]) -> String {
            do { _ = try NewsdConfiguration.load(file: file.path, environment: env); return "accepted" } catch { return "\(error)" }
        }
        #expect(reason(["NEWSD_TEACHER_BASE_URL": "llm:8000"]).hasPrefix("teacher.base_url = \"llm:8000\": expected an http"))
        #expect(reason(["NEWSD_TEACHER_SELECTION": "best"]) == "teacher.selection = best: must be margin, entropy, top_k or random")
        #expect(reason(["NEWSD_TEACHER_LEASE_SECONDS": "30"]).contains("longer than teacher.timeout_seconds"))
        #expect(reason(["NEWSD_TEACHER_USE_N": "maybe"]) == "teacher.use_n = maybe: expected true or false")
        #expect(reason(["NEWSD_TRAINER_TRAINABLE": "top:x"]) == "trainer.trainable = top:x: must be head, top:K or all")
        #expect(reason(["NEWSD_TRAINER_MODE": "sometimes"]) == "trainer.mode = sometimes: must be daemon, separate or off")
        // Tools without a model (newsd label, teacher, models) load without model.dir.
        try "[teacher]\nbase_url = \"https://api.example.com/v1\"\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: CoreError.self) { try NewsdConfiguration.load(file: file.path, environment: [:]) }
        #expect(try NewsdConfiguration.load(file: file.path, environment: [:], requireModel: false).teacher.baseURL == "https://api.example.com/v1")
    }
}
