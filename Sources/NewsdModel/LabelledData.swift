import Foundation
import NewsdSystem

/// Stable hashing of news text: the teacher cache key and the validation split both depend on it,
/// so it must never change between versions or hosts.
public enum TextHash {
    /// Text with Unicode NFC normalisation, whitespace runs collapsed and ends trimmed, lower-cased.
    public static func normalize(_ text: String) -> String {
        text.precomposedStringWithCanonicalMapping.lowercased()
            .split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// 64-bit FNV-1a of the normalised text's UTF-8 bytes.
    public static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in normalize(text).utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// Whether `text` belongs to the held-out validation split of size `fraction` (fixed per text).
    public static func isValidation(_ text: String, fraction: Double) -> Bool {
        guard fraction > 0 else { return false }
        return Double(fnv1a(text) % 10_000) < fraction * 10_000
    }
}

/// Texts with target distributions over a label set, read from a CSV: a hard label column and,
/// optionally, soft-label columns (either one label per column, e.g. a teacher's self-consistency
/// samples, turned into vote shares; or one probability per column, named after its label).
public struct LabelledData: Sendable {
    /// Class names, sorted.
    public var labels: [String]
    /// The texts.
    public var texts: [String]
    /// Index of the hard label of each text.
    public var truth: [Int]
    /// Target distribution of each text (one-hot for hard labels).
    public var targets: [[Float]]
    /// Rows skipped (empty text or no usable label), with the reason, for the report.
    public var skipped: [(row: Int, reason: String)]

    /// Reads `table`. `labels` fixes the label set (e.g. a model's); otherwise it is the sorted set
    /// of values of the label column.
    public init(table: CSVTable, textColumn: String, labelColumn: String, softLabelColumns: [String] = [],
                labels fixed: [String]? = nil) throws {
        let textIndex = try table.column(textColumn), labelIndex = try table.column(labelColumn)
        let softIndices = try softLabelColumns.map { try table.column($0) }
        let labels = fixed ?? Array(Set(table.rows.map { $0[labelIndex].trimmingCharacters(in: .whitespaces) }).subtracting([""])).sorted()
        guard labels.count >= 2 else {
            throw ModelError.invalidArgument("column \"\(labelColumn)\" has \(labels.count) distinct labels \(labels); at least 2 are needed")
        }
        let position = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        // Numeric soft columns carry probabilities; each must be named after (or end with "_") a label.
        let numeric = !softIndices.isEmpty && table.rows.prefix(50).allSatisfy { r in softIndices.allSatisfy { Float(r[$0]) != nil } }
        var columnLabel: [Int] = []
        if numeric {
            columnLabel = try softLabelColumns.map { name in
                guard let l = labels.firstIndex(where: { name == $0 || name.hasSuffix("_" + $0) }) else {
                    throw ModelError.invalidArgument("soft-label column \"\(name)\" holds numbers but names no label of \(labels)")
                }
                return l
            }
        }
        self.labels = labels
        texts = []; truth = []; targets = []; skipped = []
        for (r, row) in table.rows.enumerated() {
            let text = row[textIndex]
            guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { skipped.append((r + 1, "empty text")); continue }
            let hard = position[row[labelIndex].trimmingCharacters(in: .whitespaces)]
            var target = [Float](repeating: 0, count: labels.count)
            if numeric {
                for (k, i) in softIndices.enumerated() { target[columnLabel[k]] += max(0, Float(row[i]) ?? 0) }
            } else {
                for i in softIndices { if let p = position[row[i].trimmingCharacters(in: .whitespaces).lowercased()] ?? position[row[i]] { target[p] += 1 } }
            }
            let mass = target.reduce(0, +)
            if mass > 0 {
                target = target.map { $0 / mass }
            } else if let hard {
                target[hard] = 1
            } else {
                skipped.append((r + 1, "label \"\(row[labelIndex])\" is not one of \(labels)")); continue
            }
            texts.append(text)
            truth.append(hard ?? target.indices.max { target[$0] < target[$1] }!)
            targets.append(target)
        }
    }

    /// Rows selected by `keep`.
    public func filter(_ keep: (String) -> Bool) -> LabelledData {
        var copy = self
        let idx = texts.indices.filter { keep(texts[$0]) }
        copy.texts = idx.map { texts[$0] }; copy.truth = idx.map { truth[$0] }; copy.targets = idx.map { targets[$0] }
        return copy
    }
}
