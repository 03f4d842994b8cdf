import Foundation
import Testing
@testable import NewsdModel

@Suite struct TokenizerTests {
    /// Every fixture text (punctuation, numbers and currencies, accents, non-Latin scripts, emoji,
    /// control characters, over-long words, the empty string, truncation) gives exactly the ids of
    /// the Hugging Face tokenizer (scripts/make_goldens.py).
    @Test func matchesHuggingFaceTokenizerOnFixtures() throws {
        let base = try Fixtures.base.get()
        let fixture = try Fixtures.json("tokenizer_parity.json")
        let cases = fixture["cases"] as! [[String: Any]]
        #expect(cases.count >= 15)
        for c in cases {
            let text = c["text"] as! String
            let expected = (c["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let got = base.tokenizer.encode(text)
            #expect(got == expected, "text: \(text.debugDescription)\n got \(base.tokenizer.tokens(of: got))\n want \(base.tokenizer.tokens(of: expected))")
        }
    }

    @Test func wordPieceIsGreedyLongestMatch() throws {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens)
        #expect(tok.tokens(of: tok.encode("Profits ROSE.")) == ["[CLS]", "profit", "##s", "rose", ".", "[SEP]"])
        #expect(tok.tokens(of: tok.encode("profitz")) == ["[CLS]", "[UNK]", "[SEP]"])
        #expect(tok.encode("") == [tok.clsId, tok.sepId])
    }

    @Test func truncatesToMaxLength() throws {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens, settings: TokenizerSettings(maxLength: 5))
        #expect(tok.tokens(of: tok.encode("up down flat up down")) == ["[CLS]", "up", "down", "flat", "[SEP]"])
    }

    @Test func missingVocabularyFileIsNamed() {
        #expect(throws: ModelError.self) { try WordPieceTokenizer(vocabularyFile: URL(fileURLWithPath: "/nonexistent/vocab.txt")) }
    }
}
