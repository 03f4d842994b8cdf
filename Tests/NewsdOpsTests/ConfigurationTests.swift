import Foundation
import Testing
@testable import NewsdOps

/// The configuration: TOML file, environment overrides, validation with key, value and reason.
@Suite struct ConfigurationTests {
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
        #expect(throws: ConfigurationError.self) { try NewsdConfiguration.load(file: file.path, environment: [:]) }
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
        #expect(c.teacher.dailyBudgetUSD == 12.5 && !c.teacher.worker && c.trainer.mode == .separate && c.trainer.trainable == "top:3")
        func reason(_ env: [String: String]) -> String {
            do { _ = try NewsdConfiguration.load(file: file.path, environment: env); return "accepted" } catch { return "\(error)" }
        }
        #expect(reason(["NEWSD_TEACHER_BASE_URL": "llm:8000"]).hasPrefix("teacher.base_url = \"llm:8000\": expected an http"))
        #expect(reason(["NEWSD_TEACHER_SELECTION": "best"]) == "teacher.selection = best: must be margin, entropy, top_k or random")
        #expect(reason(["NEWSD_TEACHER_LEASE_SECONDS": "30"]).contains("longer than teacher.timeout_seconds"))
        #expect(reason(["NEWSD_TEACHER_USE_N": "maybe"]) == "teacher.use_n = maybe: expected true or false")
        #expect(reason(["NEWSD_TRAINER_TRAINABLE": "top:x"]) == "trainer.trainable = top:x: must be head, top:K, all or auto")
        #expect(reason(["NEWSD_TRAINER_MODE": "sometimes"]) == "trainer.mode = sometimes: must be daemon, separate or off")
        // Tools without a model (newsd label, teacher, models) load without model.dir.
        try "[teacher]\nbase_url = \"https://api.example.com/v1\"\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigurationError.self) { try NewsdConfiguration.load(file: file.path, environment: [:]) }
        #expect(try NewsdConfiguration.load(file: file.path, environment: [:], requireModel: false).teacher.baseURL == "https://api.example.com/v1")
    }
}

/// Every former silent default is now an error naming the key.
@Suite struct ConfigurationErrorTests {
    func load(_ toml: String, _ env: [String: String] = [:]) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("newsd-config-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("c.toml")
        try! ("[model]\ndir = \"\(dir.path)\"\n" + toml).write(to: file, atomically: true, encoding: .utf8)
        do { _ = try NewsdConfiguration.load(file: file.path, environment: env); return "accepted" } catch { return "\(error)" }
    }

    @Test func unknownSamplingStrategyNamesTheKeyAndTheChoices() {
        #expect(load("[teacher]\nselection = \"best\"\n") == "teacher.selection = \"best\": must be margin, entropy, top_k or random")
        #expect(load("[log]\nlevel = \"loud\"\n").hasPrefix("log.level = \"loud\": must be trace"))
    }

    @Test func duplicateTableIsAnErrorWithItsLine() {
        let e = load("[kafka]\nbrokers = \"a:1\"\n[kafka]\ngroup_id = \"g\"\n")
        #expect(e.contains("kafka") && e.contains(":5:"), "\(e)")
    }

    @Test func misspeltEnvironmentVariableIsNamedWithASuggestion() {
        let e = load("", ["NEWSD_KAFKA_BROKER": "x:1"])
        #expect(e == "unknown environment variable NEWSD_KAFKA_BROKER=x:1: not a configuration key (did you mean NEWSD_KAFKA_BROKERS?)", "\(e)")
        // Secrets and tool variables are not configuration keys, and are no error.
        #expect(load("", ["NEWSD_TEACHER_API_KEY": "k", "NEWSD_BASE_MODEL_DIR": "/x", "NEWSD_TEST_ANYTHING": "1"]) == "accepted")
    }

    @Test func unknownKeyAndWrongTypesNameTheKey() {
        #expect(load("[kafka]\nbrokerz = \"x:1\"\n").hasPrefix("unknown configuration key kafka.brokerz"))
        #expect(load("[tracher]\nsamples = 3\n").hasPrefix("unknown configuration key tracher"))
        #expect(load("[teacher]\nsamples = \"three\"\n") == "teacher.samples = \"three\": expected an integer")
        #expect(load("[teacher]\nsamples = 2.5\n") == "teacher.samples = 2.5: expected an integer")
        #expect(load("[trainer]\ncheck_seconds = 1e11\n").hasPrefix("trainer.check_seconds = 100000000000.0: must be between"))
        #expect(load("[metrics]\nlisten = \"nowhere\"\n").hasPrefix("metrics.listen = \"nowhere\": expected host:port"))
    }

    /// Found by fuzzing: toml++ asserted (in release: assumed) that a table header starts with a
    /// key, and aborted the process on `[= ...]`.
    @Test func tableHeaderWithoutAKeyIsAnErrorNotACrash() {
        #expect(load("[= ''&etrimetrics]\nlisten = ''&etrics]\nlist").hasSuffix("a table header must start with a key (a letter, digit, _ or -, or a quote), got [= ''&etrimetrics]"))
        #expect(load("[[ =x]]\n").contains("a table header must start with a key"))
        #expect(load("[kafka]\n[\n  X]\n").hasSuffix(":4: a table header must name its table on the same line"))
        #expect(load("[kafka]\n[\n \u{0}\u{0}X]\n").hasSuffix(":5: control character U+0000 in the configuration"))
        #expect(load("\u{FEFF}[[\naka]\n").contains("a table header must name its table on the same line"))
        #expect(load("\u{00A0}[ =x]\n").contains("a table header must start with a key"))
        #expect(load("\r\n[\n[\"\r\n").contains("a table header must name its table on the same line"))
        #expect(load("\t[[\rk\n").contains("a table header must name its table on the same line"))
        #expect(load("[\u{3000}kafka]\n").contains("a table header must name its table on the same line"))
        #expect(load("[kafka]\r\nbrokers = \"a:1\"\r\n") == "accepted")
    }

    @Test func singleQuotedStringsWithBracketsParse() throws {
        #expect(load("[kafka]\ntopics = ['a]b', \"c\"]\n") == "accepted")
    }
}

/// Values `check-config` accepted that then crashed `run` (a timer overflowed).
@Suite struct NumericRangeTests {
    @Test(arguments: [("trainer", "check_seconds", "1e11"), ("teacher", "connect_timeout_seconds", "1e17"), ("teacher", "timeout_seconds", "1e300"),
                      ("postgres", "max_backoff_seconds", "-1"), ("ingest", "shutdown_timeout_seconds", "0"), ("teacher", "window_seconds", "1e20")])
    func hugeDurationsAreRefusedByName(section: String, key: String, value: String) {
        let e = ConfigurationErrorTests().load("[\(section)]\n\(key) = \(value)\n")
        #expect(e.hasPrefix("\(section).\(key) = ") && e.contains("must be between"), "\(e)")
    }
}

/// The example configuration documents every key with its default, and loads as it is.
@Suite struct ExampleConfigurationTests {
    static var example: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/newsd.example.toml")
    }

    @Test func everyKeyIsDocumented() throws {
        let text = try String(contentsOf: Self.example, encoding: .utf8)
        var section = "", documented = Set<String>()
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "#")).trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("["), let end = line.firstIndex(of: "]") { section = String(line[line.index(after: line.startIndex)..<end]); continue }
            if let eq = line.firstIndex(of: "="), !section.isEmpty {
                let key = line[..<eq].trimmingCharacters(in: .whitespaces)
                if key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { documented.insert(section + "." + key) }
            }
        }
        let missing = NewsdConfiguration.keyPaths.filter { !documented.contains($0) }
        #expect(missing.isEmpty, "keys not in config/newsd.example.toml: \(missing)")
    }
}
