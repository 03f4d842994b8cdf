import Foundation
import NewsdHTTP
import NewsdPostgres
import NewsdSystem

extension NewsdConfiguration {
    /// Checks values; the error names the key, the value and why it is wrong.
    public func validate(requireModel: Bool = true) throws {
        func bad(_ key: String, _ value: Any, _ why: String) -> ConfigurationError { ConfigurationError(key: key, value: "\(value)", reason: why) }
        if kafka.brokers.trimmingCharacters(in: .whitespaces).isEmpty { throw bad("kafka.brokers", "\"\"", "at least one host:port is needed") }
        for b in kafka.brokers.split(separator: ",") where !b.contains(":") {
            throw bad("kafka.brokers", "\"\(kafka.brokers)\"", "\(b) is not host:port")
        }
        if kafka.topics.isEmpty || kafka.topics.contains(where: \.isEmpty) { throw bad("kafka.topics", kafka.topics, "at least one non-empty topic name is needed") }
        if kafka.groupID.isEmpty { throw bad("kafka.group_id", "\"\"", "a consumer group name is needed") }
        if !(1_000...600_000).contains(kafka.sessionTimeoutMs) { throw bad("kafka.session_timeout_ms", kafka.sessionTimeoutMs, "must be between 1000 and 600000") }
        if postgres.url.isEmpty { throw bad("postgres.url", "\"\"", "a libpq connection string or URI is needed") }
        try checkSeconds("postgres.max_backoff_seconds", postgres.maxBackoffSeconds, 0.01...3600)
        if requireModel && model.dir.isEmpty { throw bad("model.dir", "\"\"", "the student artifact (or base checkpoint) directory is required") }
        if !model.dir.isEmpty && !FileManager.default.fileExists(atPath: model.dir) { throw bad("model.dir", "\"\(model.dir)\"", "no such directory") }
        if !(1...64).contains(model.threads) { throw bad("model.threads", model.threads, "must be between 1 and 64") }
        if !(1...4096).contains(model.batchSize) { throw bad("model.batch_size", model.batchSize, "must be between 1 and 4096") }
        if !(model.backfillShare > 0 && model.backfillShare <= 1) { throw bad("model.backfill_share", model.backfillShare, "must be in (0, 1]") }
        if !(0...10_000_000).contains(model.cacheEntries) { throw bad("model.cache_entries", model.cacheEntries, "must be between 0 (off) and 10000000") }
        if !["int8", "fp32", "int8-portable", "int8-avx2", "int8-avx512-vnni"].contains(model.precision) {
            throw bad("model.precision", model.precision, "must be int8, fp32, int8-portable, int8-avx2 or int8-avx512-vnni")
        }
        if !portfolio.file.isEmpty && !FileManager.default.fileExists(atPath: portfolio.file) {
            throw bad("portfolio.file", "\"\(portfolio.file)\"", "no such file")
        }
        if !(1...100_000).contains(ingest.batchMaxMessages) { throw bad("ingest.batch_max_messages", ingest.batchMaxMessages, "must be between 1 and 100000") }
        if !(1...60_000).contains(ingest.batchMaxWaitMs) { throw bad("ingest.batch_max_wait_ms", ingest.batchMaxWaitMs, "must be between 1 and 60000") }
        if !(16...1_000_000).contains(ingest.maxTextBytes) { throw bad("ingest.max_text_bytes", ingest.maxTextBytes, "must be between 16 and 1000000") }
        // Ids and sources are indexed: a btree entry must stay far below Postgres's 2.7 kB limit.
        if !(1...1_024).contains(ingest.maxIdBytes) { throw bad("ingest.max_id_bytes", ingest.maxIdBytes, "must be between 1 and 1024") }
        if !(1...1_024).contains(ingest.maxSourceBytes) { throw bad("ingest.max_source_bytes", ingest.maxSourceBytes, "must be between 1 and 1024") }
        if !(1...1_024).contains(ingest.maxCompanyIdBytes) { throw bad("ingest.max_company_id_bytes", ingest.maxCompanyIdBytes, "must be between 1 and 1024") }
        if !(0...10_000).contains(ingest.maxCompanies) { throw bad("ingest.max_companies", ingest.maxCompanies, "must be between 0 and 10000") }
        if !(0...10_000).contains(ingest.maxMentions) { throw bad("ingest.max_mentions", ingest.maxMentions, "must be between 0 and 10000") }
        try checkSeconds("ingest.shutdown_timeout_seconds", ingest.shutdownTimeoutSeconds, 0.1...3600)
        try checkListen()
        try checkSeconds("metrics.idle_timeout_seconds", metrics.idleTimeoutSeconds, 0.1...3600)
        if !(1...1_000_000).contains(metrics.maxConnections) {
            throw ConfigurationError(key: "metrics.max_connections", value: "\(metrics.maxConnections)", reason: "must be between 1 and 1000000")
        }
        try validateTeacher()
        let tr = trainer
        if tr.minNewLabels < 1 { throw bad("trainer.min_new_labels", tr.minNewLabels, "must be >= 1") }
        if tr.shiftMinNewLabels < 0 { throw bad("trainer.shift_min_new_labels", tr.shiftMinNewLabels, "must be >= 0 (0: no early start)") }
        if tr.minLabels < 10 { throw bad("trainer.min_labels", tr.minLabels, "must be >= 10") }
        try checkSeconds("trainer.interval_seconds", tr.intervalSeconds, 1...31_536_000)
        try checkSeconds("trainer.check_seconds", tr.checkSeconds, 0.1...86_400)
        if !(1...64).contains(tr.threads) { throw bad("trainer.threads", tr.threads, "must be between 1 and 64") }
        if !(1...100).contains(tr.epochs) { throw bad("trainer.epochs", tr.epochs, "must be between 1 and 100") }
        if !(0...1_000_000).contains(tr.minSteps) { throw bad("trainer.min_steps", tr.minSteps, "must be in 0...1000000") }
        if !(0...1).contains(tr.pseudoLabelMinMargin) { throw bad("trainer.pseudo_label_min_margin", tr.pseudoLabelMinMargin, "must be between 0 and 1 (0 disables)") }
        if tr.pseudoLabelItems < 0 { throw bad("trainer.pseudo_label_items", tr.pseudoLabelItems, "must be >= 0") }
        if !(tr.trainable == "head" || tr.trainable == "all" || tr.trainable == "auto" || (tr.trainable.hasPrefix("top:") && Int(tr.trainable.dropFirst(4)).map { $0 > 0 } == true)) {
            throw bad("trainer.trainable", tr.trainable, "must be head, top:K, all or auto")
        }
        if !(tr.learningRate > 0 && tr.learningRate < 1) { throw bad("trainer.learning_rate", tr.learningRate, "must be in (0, 1)") }
        if !(tr.validationFraction > 0 && tr.validationFraction < 0.5) { throw bad("trainer.validation_fraction", tr.validationFraction, "must be in (0, 0.5)") }
        if !(tr.f1Tolerance >= 0) { throw bad("trainer.f1_tolerance", tr.f1Tolerance, "must be >= 0") }
        if !(tr.negativeRecallTolerance >= 0) { throw bad("trainer.negative_recall_tolerance", tr.negativeRecallTolerance, "must be >= 0") }
        for g in tr.goldSets where !FileManager.default.fileExists(atPath: g) { throw bad("trainer.gold_sets", g, "no such file") }
        if tr.shadowItems < 0 { throw bad("trainer.shadow_items", tr.shadowItems, "must be >= 0") }
        if !(0...100).contains(tr.replayRatio) { throw bad("trainer.replay_ratio", tr.replayRatio, "must be between 0 and 100") }
        if tr.fullRetrainEvery < 1 { throw bad("trainer.full_retrain_every", tr.fullRetrainEvery, "must be >= 1 (1: every model from the base)") }
        if !(0..<1).contains(tr.labelSmoothing) { throw bad("trainer.label_smoothing", tr.labelSmoothing, "must be in [0, 1)") }
        if !(0...2).contains(tr.classBalance) { throw bad("trainer.class_balance", tr.classBalance, "must be between 0 and 2") }
        if !(tr.layerDecay > 0 && tr.layerDecay <= 1) { throw bad("trainer.layer_decay", tr.layerDecay, "must be in (0, 1]") }
        if tr.noiseFolds == 1 || !(0...10).contains(tr.noiseFolds) { throw bad("trainer.noise_folds", tr.noiseFolds, "must be 0 (off) or between 2 and 10") }
        try validateAlerts()
    }

    /// A duration key within its range (a huge value would overflow a timer).
    func checkSeconds(_ key: String, _ value: Seconds, _ range: ClosedRange<Double>) throws {
        guard value.value.isFinite, range.contains(value.value) else {
            throw ConfigurationError(key: key, value: "\(value.value)", reason: "must be between \(range.lowerBound) and \(range.upperBound) seconds")
        }
    }

    /// `metrics.listen`: empty, or host:port with a port number.
    private func checkListen() throws {
        guard !metrics.listen.isEmpty else { return }
        let parts = metrics.listen.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, let port = UInt16(parts[1]) else {
            throw ConfigurationError(key: "metrics.listen", value: "\"\(metrics.listen)\"", reason: "expected host:port (e.g. 127.0.0.1:9464), or empty to disable")
        }
        _ = port
    }

    private func validateTeacher() throws {
        func bad(_ key: String, _ value: Any, _ why: String) -> ConfigurationError { ConfigurationError(key: "teacher." + key, value: "\(value)", reason: why) }
        let t = teacher
        if !t.baseURL.isEmpty && !(t.baseURL.hasPrefix("http://") || t.baseURL.hasPrefix("https://")) {
            throw bad("base_url", "\"\(Redaction.url(t.baseURL))\"", "expected an http:// or https:// URL (or empty to disable the teacher)")
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
        try checkSeconds("teacher.timeout_seconds", t.timeoutSeconds, 0.1...3600)
        try checkSeconds("teacher.connect_timeout_seconds", t.connectTimeoutSeconds, 0.1...600)
        if !(0...100).contains(t.maxRetries) { throw bad("max_retries", t.maxRetries, "must be between 0 and 100") }
        try checkSeconds("teacher.lease_seconds", t.leaseSeconds, 1...86_400)
        if !(t.leaseSeconds > t.timeoutSeconds) { throw bad("lease_seconds", t.leaseSeconds, "must be longer than teacher.timeout_seconds (\(t.timeoutSeconds)), or items are taken over while still being labelled") }
        if t.maxAttempts < 1 { throw bad("max_attempts", t.maxAttempts, "must be >= 1") }
        if !(0...1).contains(t.marginThreshold) { throw bad("margin_threshold", t.marginThreshold, "must be between 0 and 1") }
        if !(t.entropyThreshold >= 0) { throw bad("entropy_threshold", t.entropyThreshold, "must be >= 0") }
        if t.topK < 1 { throw bad("top_k", t.topK, "must be >= 1") }
        try checkSeconds("teacher.window_seconds", t.windowSeconds, 1...31_536_000)
        if !(0...1).contains(t.explorationRate) { throw bad("exploration_rate", t.explorationRate, "must be between 0 and 1") }
        if !(0...1).contains(t.maxShare) { throw bad("max_share", t.maxShare, "must be between 0 and 1") }
        if !(0...1).contains(t.shiftMaxShare) { throw bad("shift_max_share", t.shiftMaxShare, "must be between 0 and 1 (0: no shift detection)") }
        if t.coldStartItems < 0 { throw bad("cold_start_items", t.coldStartItems, "must be >= 0") }
    }
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
