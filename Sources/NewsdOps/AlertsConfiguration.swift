import Foundation

extension NewsdConfiguration {
    /// `[alerts.detector]` (and `[alerts.companies.<id>]` overrides): the negative-shift detector.
    /// Per company, the probability-weighted negative share of a recent window is tested against
    /// the company's own decayed baseline with a Beta-Binomial predictive tail (sound for small
    /// counts); sparse companies also have a burst rule. See docs/alerts.md.
    public struct AlertDetector: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Length of the recent window, minutes. Default 60.
        public var windowMinutes = 60.0
        /// `newsd alerts backtest` evaluates every company every this many minutes of event time
        /// (the daemon evaluates at every pass, `alerts.check_seconds`). Default 1.
        public var stepMinutes = 1.0
        /// Half-life of the baseline's exponential decay, hours. Default 72.
        public var baselineHalfLifeHours = 72.0
        /// Cap on the baseline's weight in the test (news share drifts from day to day: a larger
        /// baseline would claim more certainty than it has). Default 200.
        public var baselineMaxWeight = 200.0
        /// Negative share assumed for a company with no history. Default 0.2.
        public var priorNegativeShare = 0.2
        /// Weight of that prior, in items. Default 10.
        public var priorWeight = 10.0
        /// Weighted items the window needs before the share test runs. Default 8.
        public var minSupport = 8.0
        /// The window's negative share must exceed the baseline's by at least this. Default 0.15.
        public var minLift = 0.15
        /// False alerts per company per day the test may raise on stable news (the per-evaluation
        /// significance level is this divided by the windows per day). Default 0.01.
        public var falseAlertRate = 0.01
        /// Burst rule: this many confident negatives ... Default 4.
        public var burstCount = 4.0
        /// ... within this many minutes ... Default 30.
        public var burstMinutes = 30.0
        /// ... each with at least this negative probability ... Default 0.8.
        public var burstMinProbability = 0.8
        /// ... for companies whose baseline volume per window is below this. Default 2.
        public var sparseItemsPerWindow = 2.0
        /// No new alert for a company this long after its last one ended. Default 240.
        public var cooldownMinutes = 240.0
        /// A firing alert resolves when the window's share is at most baseline + this. Default 0.05.
        public var resolveLift = 0.05
        /// Predictions with a margin below this are low-confidence ... Default 0.2.
        public var lowConfidenceMargin = 0.2
        /// ... and weigh this much (1 = as much as a confident one). Default 0.5.
        public var lowConfidenceWeight = 0.5

        /// Keys `[alerts.companies.<id>]` may override, with their key paths.
        public static let overridable: [(key: String, path: WritableKeyPath<AlertDetector, Double> & Sendable)] = [
            ("window_minutes", \.windowMinutes), ("step_minutes", \.stepMinutes), ("baseline_half_life_hours", \.baselineHalfLifeHours),
            ("baseline_max_weight", \.baselineMaxWeight), ("prior_negative_share", \.priorNegativeShare), ("prior_weight", \.priorWeight),
            ("min_support", \.minSupport), ("min_lift", \.minLift), ("false_alert_rate", \.falseAlertRate), ("burst_count", \.burstCount),
            ("burst_minutes", \.burstMinutes), ("burst_min_probability", \.burstMinProbability),
            ("sparse_items_per_window", \.sparseItemsPerWindow), ("cooldown_minutes", \.cooldownMinutes), ("resolve_lift", \.resolveLift),
            ("low_confidence_margin", \.lowConfidenceMargin), ("low_confidence_weight", \.lowConfidenceWeight),
        ]

        /// These parameters with `overrides` (snake-case keys) applied.
        public func applying(_ overrides: [String: Double]) -> AlertDetector {
            var p = self
            for (key, path) in Self.overridable { if let v = overrides[key] { p[keyPath: path] = v } }
            return p
        }

        /// Significance level of one evaluation: the false-alert rate spread over a day's windows.
        /// Evaluations every step of a sliding window are strongly correlated (they share most of
        /// their items) and a raised alert starts the cool-down, so the day holds about
        /// 1440 / window_minutes independent tests, not one per step; the false-alert figures of
        /// the tests and docs/alerts.md measure what this gives.
        public var alphaPerEvaluation: Double { falseAlertRate / (1440 / windowMinutes) }

        /// Checks the values; `key` prefixes the error's key (`alerts.detector` or `alerts.companies.ID`).
        public func validate(at key: String) throws {
            func check(_ name: String, _ v: Double, _ range: ClosedRange<Double>) throws {
                if !(range.contains(v)) { throw ConfigurationError(key: "\(key).\(name)", value: "\(v)", reason: "must be between \(range.lowerBound) and \(range.upperBound)") }
            }
            try check("window_minutes", windowMinutes, 0.05...10_080)
            try check("step_minutes", stepMinutes, 0.01...1_440)
            if stepMinutes > windowMinutes { throw ConfigurationError(key: "\(key).step_minutes", value: "\(stepMinutes)", reason: "must not exceed window_minutes (\(windowMinutes))") }
            try check("baseline_half_life_hours", baselineHalfLifeHours, 0.01...8_760)
            try check("baseline_max_weight", baselineMaxWeight, 1...1e9)
            try check("prior_negative_share", priorNegativeShare, 0.001...0.999)
            try check("prior_weight", priorWeight, 0.01...1e6)
            try check("min_support", minSupport, 1...1e6)
            try check("min_lift", minLift, 0...1)
            try check("false_alert_rate", falseAlertRate, 1e-9...100)
            try check("burst_count", burstCount, 0...1e6)
            try check("burst_minutes", burstMinutes, 0.01...10_080)
            try check("burst_min_probability", burstMinProbability, 0...1)
            try check("sparse_items_per_window", sparseItemsPerWindow, 0...1e6)
            try check("cooldown_minutes", cooldownMinutes, 0...525_600)
            try check("resolve_lift", resolveLift, 0...1)
            try check("low_confidence_margin", lowConfidenceMargin, 0...1)
            try check("low_confidence_weight", lowConfidenceWeight, 0...1)
        }
    }

    /// `[alerts]`: negative-shift alerts, their teacher verification and delivery.
    public struct Alerts: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Run the detector and the delivery in `newsd run`. Default true.
        public var enabled = true
        /// Seconds between detector passes (new predictions read, every company evaluated). Default 30.
        public var checkSeconds: Seconds = 30.0
        /// The detector's parameters (`[alerts.detector]`).
        public var detector = AlertDetector()
        /// Per-company overrides of `[alerts.detector]` keys: `[alerts.companies.ACME] min_support = 4`.
        public var companies: [String: [String: Double]] = [:]
        /// Driver sentences recorded (and verified) per alert. Default 5.
        public var drivers = 5
        /// Ask the teacher about drivers it has not labelled before raising (when `teacher.base_url`
        /// is set). Default true.
        public var verify = true
        /// US dollars per UTC day for verification, apart from `teacher.daily_budget_usd`. Default 1.
        public var teacherDailyBudgetUSD = 1.0
        /// An alert is suppressed when more than this share of its checked drivers is contradicted
        /// by the teacher. Default 0.5.
        public var suppressShare = 0.5
        /// A verification not finished after this long is taken over by another host. Default 300.
        public var verifyTimeoutSeconds: Seconds = 300.0
        /// Prometheus Alertmanager base URL (`POST {url}/api/v2/alerts`); empty: not sent. Default empty.
        public var alertmanagerURL = ""
        /// A firing alert is re-sent to Alertmanager this often (it expires after three periods if
        /// newsd stops sending it). Default 3600.
        public var alertmanagerRefreshSeconds: Seconds = 3600.0
        /// Webhook URL (POST JSON, `X-Newsd-Signature: sha256=<HMAC of the body>` with the secret
        /// in `NEWSD_WEBHOOK_SECRET`); empty: not sent. Default empty.
        public var webhookURL = ""
        /// `NOTIFY newsd_alerts` with the JSON payload. Default true.
        public var notify = true
        /// First retry of a failed delivery after this long; doubles each time. Default 1.
        public var retryInitialSeconds: Seconds = 1.0
        /// Retries are at most this far apart (a delivery is retried until it succeeds). Default 300.
        public var retryMaxSeconds: Seconds = 300.0
        /// Seconds per delivery request at most. Default 10.
        public var deliveryTimeoutSeconds: Seconds = 10.0
        /// Link put in alerts (`generatorURL`, the report of the company), optional. Default empty.
        public var linkURL = ""
    }

    /// `[analysts]`: the analysts' rollups.
    public struct Analysts: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Seconds between rollup passes (hours and days touched by new or changed predictions are
        /// recomputed). Default 30.
        public var rollupSeconds: Seconds = 30.0
        /// Predictions with a margin below this count as low-confidence in the rollups. Default 0.2.
        public var lowConfidenceMargin = 0.2
        /// Seconds between refreshes of `model_agreement` (only when items were rescored). Default 600.
        public var agreementRefreshSeconds: Seconds = 600.0
    }

    /// Checks `[alerts]` and `[analysts]`.
    func validateAlerts() throws {
        func bad(_ key: String, _ value: Any, _ why: String) -> ConfigurationError { ConfigurationError(key: key, value: "\(value)", reason: why) }
        try alerts.detector.validate(at: "alerts.detector")
        let known = Set(AlertDetector.overridable.map(\.key))
        for (company, overrides) in alerts.companies.sorted(by: { $0.key < $1.key }) {
            for key in overrides.keys.sorted() where !known.contains(key) {
                throw bad("alerts.companies.\(company).\(key)", overrides[key]!, "not a detector parameter (known: \(known.sorted().joined(separator: ", ")))")
            }
            try alerts.detector.applying(overrides).validate(at: "alerts.companies.\(company)")
        }
        try checkSeconds("alerts.check_seconds", alerts.checkSeconds, 0.05...3600)
        if !(0...50).contains(alerts.drivers) { throw bad("alerts.drivers", alerts.drivers, "must be between 0 and 50") }
        if !(alerts.teacherDailyBudgetUSD >= 0) { throw bad("alerts.teacher_daily_budget_usd", alerts.teacherDailyBudgetUSD, "must be >= 0 (0 = unlimited)") }
        if !(0..<1).contains(alerts.suppressShare) { throw bad("alerts.suppress_share", alerts.suppressShare, "must be in [0, 1)") }
        try checkSeconds("alerts.verify_timeout_seconds", alerts.verifyTimeoutSeconds, 1...86_400)
        try checkSeconds("alerts.alertmanager_refresh_seconds", alerts.alertmanagerRefreshSeconds, 1...86_400)
        try checkSeconds("alerts.retry_initial_seconds", alerts.retryInitialSeconds, 0.01...3600)
        try checkSeconds("alerts.retry_max_seconds", alerts.retryMaxSeconds, 0.01...86_400)
        try checkSeconds("alerts.delivery_timeout_seconds", alerts.deliveryTimeoutSeconds, 0.1...600)
        for (key, url) in [("alerts.alertmanager_url", alerts.alertmanagerURL), ("alerts.webhook_url", alerts.webhookURL)] where !url.isEmpty {
            guard let u = URL(string: url), let scheme = u.scheme?.lowercased(), ["http", "https"].contains(scheme), u.host != nil else {
                throw bad(key, "\"\(url)\"", "expected an http:// or https:// URL")
            }
        }
        try checkSeconds("analysts.rollup_seconds", analysts.rollupSeconds, 0.05...86_400)
        if !(0...1).contains(analysts.lowConfidenceMargin) { throw bad("analysts.low_confidence_margin", analysts.lowConfidenceMargin, "must be between 0 and 1") }
        try checkSeconds("analysts.agreement_refresh_seconds", analysts.agreementRefreshSeconds, 1...604_800)
    }
}
