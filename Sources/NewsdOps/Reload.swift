import Foundation
import NewsdSystem

/// What a SIGHUP reload does with a re-read configuration: the keys that changed and can be
/// applied while running (rates, thresholds, budgets, sampling, portfolio, log level), and the
/// keys that changed but need a restart (brokers, group, database, ...), which are reported and
/// ignored. Pure: computed from the running and the re-read configuration.
public struct ReloadPlan: Sendable, Equatable {
    /// One changed key, with its old and new value as text (secrets hidden).
    public struct Change: Sendable, Equatable, CustomStringConvertible {
        /// Dotted key (`teacher.requests_per_minute`).
        public var key: String
        /// Value in force.
        public var old: String
        /// Value read.
        public var new: String
        /// `key: old -> new`.
        public var description: String { "\(key): \(old) -> \(new)" }
    }

    /// Keys a reload applies without a restart.
    public static let reloadableKeys: Set<String> = [
        "teacher.requests_per_minute", "teacher.tokens_per_minute", "teacher.daily_budget_usd",
        "teacher.selection", "teacher.margin_threshold", "teacher.entropy_threshold", "teacher.top_k", "teacher.window_seconds",
        "teacher.exploration_rate", "teacher.max_share", "teacher.shift_max_share", "teacher.cold_start_items",
        "portfolio.file", "log.level",
    ]

    /// Key prefixes applied at once: the alert detector's parameters and per-company overrides
    /// (the detector reads them at its next pass).
    public static let reloadablePrefixes = ["alerts.detector.", ConfigurationTree.companyOverrides]

    /// Changed keys that are applied.
    public var applied: [Change]
    /// Changed keys that need a restart; not applied.
    public var needsRestart: [Change]
    /// The configuration in force after the reload: the running one with the applied keys taken
    /// from the re-read one.
    public var result: NewsdConfiguration

    /// Keys whose values are not shown (they may hold a password).
    static let hiddenKeys: Set<String> = ["postgres.url", "kafka.properties"]

    /// Compares `running` with `reread`.
    public init(running: NewsdConfiguration, reread: NewsdConfiguration) throws {
        let old = try ConfigurationTree(running), new = try ConfigurationTree(reread)
        var applied: [Change] = [], restart: [Change] = []
        var result = old
        for key in old.leafPaths() + ["kafka.properties", ConfigurationTree.companyOverrides] {
            let a = try old.leaf(key), b = try new.leaf(key)
            guard a != b else { continue }
            let hidden = Self.hiddenKeys.contains(key)
            let change = Change(key: key, old: hidden ? "(hidden)" : ConfigurationTree.text(a), new: hidden ? "(hidden)" : ConfigurationTree.text(b))
            if Self.reloadableKeys.contains(key) || Self.reloadablePrefixes.contains(where: { key.hasPrefix($0) }) {
                applied.append(change)
                try result.setLeaf(key, b)
            } else {
                restart.append(change)
            }
        }
        self.applied = applied
        needsRestart = restart
        self.result = try result.decode()
    }
}
