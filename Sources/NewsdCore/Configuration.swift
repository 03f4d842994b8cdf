import Foundation

/// newsd's configuration: one TOML file, every key overridable by `NEWSD_<SECTION>_<KEY>`
/// environment variables (so systemd `EnvironmentFile=` and scripts can set it). Secrets never
/// need to be in the file: see `Secrets`. `config/newsd.example.toml` documents every key.
public struct NewsdConfiguration: Sendable, Equatable {
    /// `[kafka]`: where news comes from.
    public struct Kafka: Sendable, Equatable {
        /// Bootstrap servers, `host:port,...`. Default `localhost:9092`.
        public var brokers = "localhost:9092"
        /// Topics to consume. Default `["news"]`.
        public var topics = ["news"]
        /// Consumer group; hosts with the same group share the partitions. Default `newsd`.
        public var groupID = "newsd"
        /// Where a partition with no stored offset starts: `earliest` or `latest`. Default `earliest`.
        public var autoOffsetReset = "earliest"
        /// Group session timeout; lower means faster failover, more false alarms. Default 45000.
        public var sessionTimeoutMs = 45_000
        /// Extra librdkafka properties (`[kafka.properties]`), e.g. `"security.protocol" = "SASL_SSL"`.
        public var properties: [String: String] = [:]
    }

    /// `[postgres]`: where results go.
    public struct Postgres: Sendable, Equatable {
        /// libpq connection string or URI. Default `postgresql:///newsd` (local socket).
        /// The password comes from `NEWSD_POSTGRES_PASSWORD`, `PGPASSWORD` or `~/.pgpass`.
        public var url = "postgresql:///newsd"
        /// Seconds between reconnection attempts at most (backoff doubles up to it). Default 30.
        public var maxBackoffSeconds = 30.0
    }

    /// `[model]`: the student.
    public struct Model: Sendable, Equatable {
        /// Student artifact directory (or a base checkpoint directory, untrained head). Required.
        public var dir = ""
        /// Base checkpoint that artifacts build on. Default: the path recorded in the artifact.
        public var baseDir = ""
        /// Inference threads. Default 2.
        public var threads = 2
        /// Sentences per inference chunk group. Default 32.
        public var batchSize = 32
        /// Where registered models are unpacked. Default `$STATE_DIRECTORY/models`, else the
        /// temporary directory.
        public var cacheDir = ""
    }

    /// `[portfolio]`: the companies to link.
    public struct Portfolio: Sendable, Equatable {
        /// CSV with columns id,name,aliases,tickers (aliases and tickers separated by `;`). Default none.
        public var file = ""
    }

    /// `[ingest]`: micro-batching and limits.
    public struct Ingest: Sendable, Equatable {
        /// Messages per micro-batch at most. Default 256.
        public var batchMaxMessages = 256
        /// Milliseconds a micro-batch waits to fill at most. Default 250.
        public var batchMaxWaitMs = 250
        /// Texts longer than this many UTF-8 bytes are rejected. Default 8192.
        public var maxTextBytes = 8192
        /// Seconds to finish the batch in flight after SIGTERM (keep below systemd's
        /// TimeoutStopSec). Default 20.
        public var shutdownTimeoutSeconds = 20.0
    }

    /// `[metrics]`: the operators' HTTP endpoint.
    public struct Metrics: Sendable, Equatable {
        /// `host:port` serving `GET /metrics` (Prometheus) and `GET /health`; empty disables it.
        /// Default `127.0.0.1:9464`. A port already in use is logged and the daemon runs without it.
        public var listen = "127.0.0.1:9464"
    }

    /// `[teacher]`: the LLM that labels the items the student is unsure about.
    public struct Teacher: Sendable, Equatable {
        /// Base URL of an OpenAI-compatible API (`{base_url}/chat/completions`); empty disables the
        /// teacher (nothing is queued, no worker runs). Default empty.
        public var baseURL = ""
        /// Model name sent to the server. Default `teacher`.
        public var model = "teacher"
        /// Prompt template file (`=== system ===` / `=== user ===`, `{{labels}}`, `{{text}}`);
        /// empty = the built-in investor-sentiment prompt. Default empty.
        public var promptFile = ""
        /// Labels the teacher may answer. Default negative, neutral, positive.
        public var labels = ["negative", "neutral", "positive"]
        /// Samples per item (k, self-consistency). Default 3.
        public var samples = 3
        /// Extra samples at most when the first k have no majority (m). Default 2.
        public var extraSamples = 2
        /// Sampling temperature. Default 0.8.
        public var temperature = 0.8
        /// Nucleus sampling. Default 0.9.
        public var topP = 0.9
        /// Completion tokens per sample at most. Default 256.
        public var maxTokens = 256
        /// Ask for k samples in one request (`n`); servers that ignore it get one request per sample.
        /// Default true.
        public var useN = true
        /// Requests in flight at most, per host. Default 16.
        public var concurrency = 16
        /// Requests per minute at most, per host (0 = unlimited). Default 600.
        public var requestsPerMinute = 600
        /// Tokens per minute at most, per host (0 = unlimited). Default 0.
        public var tokensPerMinute = 0
        /// US dollars per UTC day for all hosts together (0 = unlimited). Default 5.
        public var dailyBudgetUSD = 5.0
        /// Price per million prompt tokens, USD (set your provider's). Default 0.5.
        public var inputPricePerMillion = 0.5
        /// Price per million completion tokens, USD. Default 1.5.
        public var outputPricePerMillion = 1.5
        /// Seconds per request at most. Default 60.
        public var timeoutSeconds = 60.0
        /// Seconds to connect at most. Default 10.
        public var connectTimeoutSeconds = 10.0
        /// Retries per request (429, 5xx, timeouts, connection errors). Default 6.
        public var maxRetries = 6
        /// Seconds a worker holds a claimed item before another host may take it. Default 300.
        public var leaseSeconds = 300.0
        /// Claims of one item at most before it is marked failed. Default 10.
        public var maxAttempts = 10
        /// Run the queue worker in `newsd run` (false: only `newsd teacher work` drains it). Default true.
        public var worker = true
        /// Selection strategy: margin, entropy, top_k or random. Default margin.
        public var selection = "margin"
        /// Margin (top-1 minus top-2 probability) below which an item is uncertain. Default 0.3.
        public var marginThreshold = 0.3
        /// Entropy (nats) above which an item is uncertain. Default 0.7.
        public var entropyThreshold = 0.7
        /// Items per window for top_k. Default 200.
        public var topK = 200
        /// The top_k window, seconds. Default 3600.
        public var windowSeconds = 3600.0
        /// Share of items sent at random (live-accuracy estimate). Default 0.02.
        public var explorationRate = 0.02
        /// Share of traffic sent to the teacher at most. Default 0.3.
        public var maxShare = 0.3
        /// With no trained model, the first N items all go to the teacher. Default 500.
        public var coldStartItems = 500
    }

    /// `[trainer]`: continuous distillation.
    public struct Trainer: Sendable, Equatable {
        /// `daemon` (trains inside `newsd run`), `separate` (only `newsd trainer` trains) or `off`. Default daemon.
        public var mode = "daemon"
        /// New labels since the last model that start a run. Default 200.
        public var minNewLabels = 200
        /// Labels needed at all. Default 100.
        public var minLabels = 100
        /// Seconds after which any new labels start a run. Default 3600.
        public var intervalSeconds = 3600.0
        /// Seconds between checks. Default 30.
        public var checkSeconds = 30.0
        /// Training threads (a cap, so ingest keeps its cores). Default 1.
        public var threads = 1
        /// Epochs at least. Default 4.
        public var epochs = 4
        /// Optimizer steps at least: small label sets get more epochs (at most 20). Default 250.
        public var minSteps = 250
        /// Recent unlabelled items the active student predicts with at least this margin join the
        /// training set with its probabilities as soft targets (self-training; 0 disables). Default 0 (off: on the shared data it helped random sampling by
        /// 1.8 points macro-F1 and cost uncertainty sampling 0.9; see the experiment script).
        public var pseudoLabelMinMargin = 0.0
        /// Recent items considered for pseudo-labels at most. Default 5000.
        public var pseudoLabelItems = 5000
        /// `head`, `top:K` or `all`. Default top:2.
        public var trainable = "top:2"
        /// Learning rate. Default 0.0001.
        public var learningRate = 1e-4
        /// Share of labels held out for validation, chosen by text hash (never trained on). Default 0.1.
        public var validationFraction = 0.1
        /// ε: promote only if macro-F1 >= active's - ε. Default 0.01.
        public var f1Tolerance = 0.01
        /// δ: and negative-class recall >= active's - δ. Default 0.02.
        public var negativeRecallTolerance = 0.02
        /// Gold sets (CSV with `text` and `label` or `label_experts`) scored for every candidate.
        public var goldSets: [String] = []
        /// Live items on which a candidate's agreement with the active model is measured. Default 300.
        public var shadowItems = 300
    }

    /// `[log]`.
    public struct Log: Sendable, Equatable {
        /// trace, debug, info, notice, warning, error or critical. Default info.
        public var level = "info"
    }

    public var kafka = Kafka()
    public var postgres = Postgres()
    public var model = Model()
    public var portfolio = Portfolio()
    public var ingest = Ingest()
    public var metrics = Metrics()
    public var teacher = Teacher()
    public var trainer = Trainer()
    public var log = Log()

    /// The defaults.
    public init() {}

    /// Loads a TOML file (if given), then applies `NEWSD_*` environment overrides, then validates.
    /// Errors name the key, the value and the reason.
    /// `requireModel: false` is for tools that serve no model (`newsd label`, `newsd teacher`).
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                            requireModel: Bool = true) throws -> NewsdConfiguration {
        var values: [String: TOMLValue] = [:]
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw CoreError("cannot read configuration \(file): \(error.localizedDescription)")
            }
            values = try TOML.parse(text, source: file)
        }
        var config = NewsdConfiguration()
        let keys = Self.keys
        let known = Dictionary(uniqueKeysWithValues: keys.map { ($0.path, $0) })
        for (path, value) in values.sorted(by: { $0.key < $1.key }) {
            if path.hasPrefix("kafka.properties.") {
                let name = String(path.dropFirst("kafka.properties.".count))
                guard case let .string(s) = value else { throw CoreError("kafka.properties.\(name) = \(value): librdkafka properties are strings") }
                config.kafka.properties[name] = s
                continue
            }
            guard let key = known[path] else {
                throw CoreError("unknown configuration key \(path) in \(file ?? "config") (known: \(keys.map(\.path).joined(separator: ", ")))")
            }
            try key.apply(&config, value, "\(path) = \(value)")
        }
        for key in keys {
            let env = "NEWSD_" + key.path.uppercased().replacingOccurrences(of: ".", with: "_")
            guard let raw = environment[env] else { continue }
            try key.apply(&config, try key.fromEnvironment(raw), "\(env)=\(raw) (key \(key.path))")
        }
        try config.validate(requireModel: requireModel)
        return config
    }

    /// Checks values; the error names the key, the value and why it is wrong.
    public func validate(requireModel: Bool = true) throws {
        func bad(_ key: String, _ value: Any, _ why: String) -> CoreError { CoreError("\(key) = \(value): \(why)") }
        if kafka.brokers.trimmingCharacters(in: .whitespaces).isEmpty { throw bad("kafka.brokers", "\"\"", "at least one host:port is needed") }
        for b in kafka.brokers.split(separator: ",") where !b.contains(":") {
            throw bad("kafka.brokers", "\"\(kafka.brokers)\"", "\(b) is not host:port")
        }
        if kafka.topics.isEmpty || kafka.topics.contains(where: \.isEmpty) { throw bad("kafka.topics", kafka.topics, "at least one non-empty topic name is needed") }
        if kafka.groupID.isEmpty { throw bad("kafka.group_id", "\"\"", "a consumer group name is needed") }
        if !["earliest", "latest"].contains(kafka.autoOffsetReset) { throw bad("kafka.auto_offset_reset", kafka.autoOffsetReset, "must be earliest or latest") }
        if !(1_000...600_000).contains(kafka.sessionTimeoutMs) { throw bad("kafka.session_timeout_ms", kafka.sessionTimeoutMs, "must be between 1000 and 600000") }
        if postgres.url.isEmpty { throw bad("postgres.url", "\"\"", "a libpq connection string or URI is needed") }
        if !(postgres.maxBackoffSeconds > 0) { throw bad("postgres.max_backoff_seconds", postgres.maxBackoffSeconds, "must be > 0") }
        if requireModel && model.dir.isEmpty { throw bad("model.dir", "\"\"", "the student artifact (or base checkpoint) directory is required") }
        if !model.dir.isEmpty && !FileManager.default.fileExists(atPath: model.dir) { throw bad("model.dir", "\"\(model.dir)\"", "no such directory") }
        if !(1...64).contains(model.threads) { throw bad("model.threads", model.threads, "must be between 1 and 64") }
        if !(1...4096).contains(model.batchSize) { throw bad("model.batch_size", model.batchSize, "must be between 1 and 4096") }
        if !portfolio.file.isEmpty && !FileManager.default.fileExists(atPath: portfolio.file) {
            throw bad("portfolio.file", "\"\(portfolio.file)\"", "no such file")
        }
        if !(1...100_000).contains(ingest.batchMaxMessages) { throw bad("ingest.batch_max_messages", ingest.batchMaxMessages, "must be between 1 and 100000") }
        if !(1...60_000).contains(ingest.batchMaxWaitMs) { throw bad("ingest.batch_max_wait_ms", ingest.batchMaxWaitMs, "must be between 1 and 60000") }
        if !(16...1_000_000).contains(ingest.maxTextBytes) { throw bad("ingest.max_text_bytes", ingest.maxTextBytes, "must be between 16 and 1000000") }
        if !(ingest.shutdownTimeoutSeconds > 0) { throw bad("ingest.shutdown_timeout_seconds", ingest.shutdownTimeoutSeconds, "must be > 0") }
        try validateTeacher()
        let tr = trainer
        if !["daemon", "separate", "off"].contains(tr.mode) { throw bad("trainer.mode", tr.mode, "must be daemon, separate or off") }
        if tr.minNewLabels < 1 { throw bad("trainer.min_new_labels", tr.minNewLabels, "must be >= 1") }
        if tr.minLabels < 10 { throw bad("trainer.min_labels", tr.minLabels, "must be >= 10") }
        if !(tr.intervalSeconds > 0) { throw bad("trainer.interval_seconds", tr.intervalSeconds, "must be > 0") }
        if !(tr.checkSeconds > 0) { throw bad("trainer.check_seconds", tr.checkSeconds, "must be > 0") }
        if !(1...64).contains(tr.threads) { throw bad("trainer.threads", tr.threads, "must be between 1 and 64") }
        if !(1...100).contains(tr.epochs) { throw bad("trainer.epochs", tr.epochs, "must be between 1 and 100") }
        if tr.minSteps < 0 { throw bad("trainer.min_steps", tr.minSteps, "must be >= 0") }
        if !(0...1).contains(tr.pseudoLabelMinMargin) { throw bad("trainer.pseudo_label_min_margin", tr.pseudoLabelMinMargin, "must be between 0 and 1 (0 disables)") }
        if tr.pseudoLabelItems < 0 { throw bad("trainer.pseudo_label_items", tr.pseudoLabelItems, "must be >= 0") }
        if !(tr.trainable == "head" || tr.trainable == "all" || (tr.trainable.hasPrefix("top:") && Int(tr.trainable.dropFirst(4)).map { $0 > 0 } == true)) {
            throw bad("trainer.trainable", tr.trainable, "must be head, top:K or all")
        }
        if !(tr.learningRate > 0 && tr.learningRate < 1) { throw bad("trainer.learning_rate", tr.learningRate, "must be in (0, 1)") }
        if !(tr.validationFraction > 0 && tr.validationFraction < 0.5) { throw bad("trainer.validation_fraction", tr.validationFraction, "must be in (0, 0.5)") }
        if !(tr.f1Tolerance >= 0) { throw bad("trainer.f1_tolerance", tr.f1Tolerance, "must be >= 0") }
        if !(tr.negativeRecallTolerance >= 0) { throw bad("trainer.negative_recall_tolerance", tr.negativeRecallTolerance, "must be >= 0") }
        for g in tr.goldSets where !FileManager.default.fileExists(atPath: g) { throw bad("trainer.gold_sets", g, "no such file") }
        if tr.shadowItems < 0 { throw bad("trainer.shadow_items", tr.shadowItems, "must be >= 0") }
        if !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(log.level) {
            throw bad("log.level", log.level, "must be trace, debug, info, notice, warning, error or critical")
        }
    }

    private func validateTeacher() throws {
        func bad(_ key: String, _ value: Any, _ why: String) -> CoreError { CoreError("teacher.\(key) = \(value): \(why)") }
        let t = teacher
        if !t.baseURL.isEmpty && !(t.baseURL.hasPrefix("http://") || t.baseURL.hasPrefix("https://")) {
            throw bad("base_url", "\"\(t.baseURL)\"", "expected an http:// or https:// URL (or empty to disable the teacher)")
        }
        if !t.promptFile.isEmpty && !FileManager.default.fileExists(atPath: t.promptFile) { throw bad("prompt_file", "\"\(t.promptFile)\"", "no such file") }
        if t.labels.count < 2 || Set(t.labels).count != t.labels.count { throw bad("labels", t.labels, "at least two distinct labels are needed") }
        if !(1...15).contains(t.samples) { throw bad("samples", t.samples, "must be between 1 and 15") }
        if !(0...15).contains(t.extraSamples) { throw bad("extra_samples", t.extraSamples, "must be between 0 and 15") }
        if !(0...2).contains(t.temperature) { throw bad("temperature", t.temperature, "must be between 0 and 2") }
        if !(t.topP > 0 && t.topP <= 1) { throw bad("top_p", t.topP, "must be in (0, 1]") }
        if !(1...32_768).contains(t.maxTokens) { throw bad("max_tokens", t.maxTokens, "must be between 1 and 32768") }
        if !(1...256).contains(t.concurrency) { throw bad("concurrency", t.concurrency, "must be between 1 and 256") }
        if t.requestsPerMinute < 0 { throw bad("requests_per_minute", t.requestsPerMinute, "must be >= 0 (0 = unlimited)") }
        if t.tokensPerMinute < 0 { throw bad("tokens_per_minute", t.tokensPerMinute, "must be >= 0 (0 = unlimited)") }
        if !(t.dailyBudgetUSD >= 0) { throw bad("daily_budget_usd", t.dailyBudgetUSD, "must be >= 0 (0 = unlimited)") }
        if !(t.inputPricePerMillion >= 0) { throw bad("input_price_per_million", t.inputPricePerMillion, "must be >= 0") }
        if !(t.outputPricePerMillion >= 0) { throw bad("output_price_per_million", t.outputPricePerMillion, "must be >= 0") }
        if !(t.timeoutSeconds > 0) { throw bad("timeout_seconds", t.timeoutSeconds, "must be > 0") }
        if !(t.connectTimeoutSeconds > 0) { throw bad("connect_timeout_seconds", t.connectTimeoutSeconds, "must be > 0") }
        if !(0...100).contains(t.maxRetries) { throw bad("max_retries", t.maxRetries, "must be between 0 and 100") }
        if !(t.leaseSeconds >= 1) { throw bad("lease_seconds", t.leaseSeconds, "must be >= 1") }
        if !(t.leaseSeconds > t.timeoutSeconds) { throw bad("lease_seconds", t.leaseSeconds, "must be longer than teacher.timeout_seconds (\(t.timeoutSeconds)), or items are taken over while still being labelled") }
        if t.maxAttempts < 1 { throw bad("max_attempts", t.maxAttempts, "must be >= 1") }
        if !["margin", "entropy", "top_k", "random"].contains(t.selection) { throw bad("selection", t.selection, "must be margin, entropy, top_k or random") }
        if !(0...1).contains(t.marginThreshold) { throw bad("margin_threshold", t.marginThreshold, "must be between 0 and 1") }
        if !(t.entropyThreshold >= 0) { throw bad("entropy_threshold", t.entropyThreshold, "must be >= 0") }
        if t.topK < 1 { throw bad("top_k", t.topK, "must be >= 1") }
        if !(t.windowSeconds > 0) { throw bad("window_seconds", t.windowSeconds, "must be > 0") }
        if !(0...1).contains(t.explorationRate) { throw bad("exploration_rate", t.explorationRate, "must be between 0 and 1") }
        if !(0...1).contains(t.maxShare) { throw bad("max_share", t.maxShare, "must be between 0 and 1") }
        if t.coldStartItems < 0 { throw bad("cold_start_items", t.coldStartItems, "must be >= 0") }
    }

    /// One configuration key: its dotted path and how to set it.
    struct Key {
        let path: String
        let apply: (inout NewsdConfiguration, TOMLValue, String) throws -> Void
        let fromEnvironment: (String) throws -> TOMLValue

        static func string(_ path: String, _ kp: WritableKeyPath<NewsdConfiguration, String>) -> Key {
            Key(path: path, apply: { c, v, ctx in
                guard case let .string(s) = v else { throw CoreError("\(ctx): expected a string") }
                c[keyPath: kp] = s
            }, fromEnvironment: { .string($0) })
        }
        static func int(_ path: String, _ kp: WritableKeyPath<NewsdConfiguration, Int>) -> Key {
            Key(path: path, apply: { c, v, ctx in
                guard case let .integer(i) = v else { throw CoreError("\(ctx): expected an integer") }
                c[keyPath: kp] = i
            }, fromEnvironment: { raw in
                guard let i = Int(raw.trimmingCharacters(in: .whitespaces)) else { throw CoreError("\(path) = \(raw): expected an integer") }
                return .integer(i)
            })
        }
        static func double(_ path: String, _ kp: WritableKeyPath<NewsdConfiguration, Double>) -> Key {
            Key(path: path, apply: { c, v, ctx in
                switch v {
                case let .float(d): c[keyPath: kp] = d
                case let .integer(i): c[keyPath: kp] = Double(i)
                default: throw CoreError("\(ctx): expected a number")
                }
            }, fromEnvironment: { raw in
                guard let d = Double(raw.trimmingCharacters(in: .whitespaces)) else { throw CoreError("\(path) = \(raw): expected a number") }
                return .float(d)
            })
        }
        static func bool(_ path: String, _ kp: WritableKeyPath<NewsdConfiguration, Bool>) -> Key {
            Key(path: path, apply: { c, v, ctx in
                guard case let .bool(b) = v else { throw CoreError("\(ctx): expected true or false") }
                c[keyPath: kp] = b
            }, fromEnvironment: { raw in
                switch raw.trimmingCharacters(in: .whitespaces).lowercased() {
                case "true", "1", "yes": return .bool(true)
                case "false", "0", "no": return .bool(false)
                default: throw CoreError("\(path) = \(raw): expected true or false")
                }
            })
        }
        static func strings(_ path: String, _ kp: WritableKeyPath<NewsdConfiguration, [String]>) -> Key {
            Key(path: path, apply: { c, v, ctx in
                switch v {
                case let .array(items):
                    c[keyPath: kp] = try items.map { item in
                        guard case let .string(s) = item else { throw CoreError("\(ctx): expected an array of strings") }
                        return s
                    }
                case let .string(s): c[keyPath: kp] = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                default: throw CoreError("\(ctx): expected an array of strings")
                }
            }, fromEnvironment: { .string($0) })
        }
    }

    static var keys: [Key] { [
        .string("kafka.brokers", \.kafka.brokers), .strings("kafka.topics", \.kafka.topics),
        .string("kafka.group_id", \.kafka.groupID), .string("kafka.auto_offset_reset", \.kafka.autoOffsetReset),
        .int("kafka.session_timeout_ms", \.kafka.sessionTimeoutMs),
        .string("postgres.url", \.postgres.url), .double("postgres.max_backoff_seconds", \.postgres.maxBackoffSeconds),
        .string("model.dir", \.model.dir), .string("model.base_dir", \.model.baseDir),
        .int("model.threads", \.model.threads), .int("model.batch_size", \.model.batchSize),
        .string("model.cache_dir", \.model.cacheDir),
        .string("portfolio.file", \.portfolio.file),
        .int("ingest.batch_max_messages", \.ingest.batchMaxMessages), .int("ingest.batch_max_wait_ms", \.ingest.batchMaxWaitMs),
        .int("ingest.max_text_bytes", \.ingest.maxTextBytes), .double("ingest.shutdown_timeout_seconds", \.ingest.shutdownTimeoutSeconds),
        .string("metrics.listen", \.metrics.listen), .string("log.level", \.log.level),
        .string("teacher.base_url", \.teacher.baseURL), .string("teacher.model", \.teacher.model),
        .string("teacher.prompt_file", \.teacher.promptFile), .strings("teacher.labels", \.teacher.labels),
        .int("teacher.samples", \.teacher.samples), .int("teacher.extra_samples", \.teacher.extraSamples),
        .double("teacher.temperature", \.teacher.temperature), .double("teacher.top_p", \.teacher.topP),
        .int("teacher.max_tokens", \.teacher.maxTokens), .bool("teacher.use_n", \.teacher.useN),
        .int("teacher.concurrency", \.teacher.concurrency), .int("teacher.requests_per_minute", \.teacher.requestsPerMinute),
        .int("teacher.tokens_per_minute", \.teacher.tokensPerMinute), .double("teacher.daily_budget_usd", \.teacher.dailyBudgetUSD),
        .double("teacher.input_price_per_million", \.teacher.inputPricePerMillion),
        .double("teacher.output_price_per_million", \.teacher.outputPricePerMillion),
        .double("teacher.timeout_seconds", \.teacher.timeoutSeconds), .double("teacher.connect_timeout_seconds", \.teacher.connectTimeoutSeconds),
        .int("teacher.max_retries", \.teacher.maxRetries), .double("teacher.lease_seconds", \.teacher.leaseSeconds),
        .int("teacher.max_attempts", \.teacher.maxAttempts), .bool("teacher.worker", \.teacher.worker),
        .string("teacher.selection", \.teacher.selection), .double("teacher.margin_threshold", \.teacher.marginThreshold),
        .double("teacher.entropy_threshold", \.teacher.entropyThreshold), .int("teacher.top_k", \.teacher.topK),
        .double("teacher.window_seconds", \.teacher.windowSeconds), .double("teacher.exploration_rate", \.teacher.explorationRate),
        .double("teacher.max_share", \.teacher.maxShare), .int("teacher.cold_start_items", \.teacher.coldStartItems),
        .string("trainer.mode", \.trainer.mode), .int("trainer.min_new_labels", \.trainer.minNewLabels),
        .int("trainer.min_labels", \.trainer.minLabels), .double("trainer.interval_seconds", \.trainer.intervalSeconds),
        .double("trainer.check_seconds", \.trainer.checkSeconds), .int("trainer.threads", \.trainer.threads),
        .int("trainer.epochs", \.trainer.epochs), .int("trainer.min_steps", \.trainer.minSteps),
        .double("trainer.pseudo_label_min_margin", \.trainer.pseudoLabelMinMargin), .int("trainer.pseudo_label_items", \.trainer.pseudoLabelItems), .string("trainer.trainable", \.trainer.trainable),
        .double("trainer.learning_rate", \.trainer.learningRate), .double("trainer.validation_fraction", \.trainer.validationFraction),
        .double("trainer.f1_tolerance", \.trainer.f1Tolerance), .double("trainer.negative_recall_tolerance", \.trainer.negativeRecallTolerance),
        .strings("trainer.gold_sets", \.trainer.goldSets), .int("trainer.shadow_items", \.trainer.shadowItems),
    ] }
}

/// Secrets, from the environment or a credentials file, never from the configuration file.
public enum Secrets {
    /// The value of `NEWSD_<NAME>`, else the line `NAME=value` in the file named by
    /// `NEWSD_CREDENTIALS_FILE` (or systemd's `$CREDENTIALS_DIRECTORY/newsd`).
    public static func value(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let v = environment["NEWSD_" + name] { return v }
        let file = environment["NEWSD_CREDENTIALS_FILE"] ?? environment["CREDENTIALS_DIRECTORY"].map { $0 + "/newsd" }
        guard let file, let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }
}
