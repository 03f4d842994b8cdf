import Foundation
import NewsdSystem
import Testing
@testable import NewsdModel

/// Labelled CSV data and the validation split by text hash.
@Suite struct LabelledDataTests {
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
