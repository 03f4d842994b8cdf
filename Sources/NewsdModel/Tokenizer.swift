import Foundation

/// Settings of a BERT WordPiece tokenizer, stored with every trained artifact so a model is always
/// served with the tokenizer it was trained with.
public struct TokenizerSettings: Codable, Sendable, Equatable {
    /// Lower-case the text (BERT "uncased"). Default `true`.
    public var lowercase: Bool = true
    /// Strip accents (NFD, then drop non-spacing marks). `nil` follows `lowercase`, as in BERT.
    public var stripAccents: Bool? = nil
    /// Surround CJK ideographs with spaces so each becomes a word. Default `true`.
    public var splitCJK: Bool = true
    /// Maximum number of ids including `[CLS]` and `[SEP]`; longer texts are truncated. Default 128.
    public var maxLength: Int = 128
    /// Words longer than this many characters become `[UNK]`. Default 100.
    public var maxInputCharsPerWord: Int = 100

    /// Creates settings with the BERT-uncased defaults.
    public init(lowercase: Bool = true, stripAccents: Bool? = nil, splitCJK: Bool = true,
                maxLength: Int = 128, maxInputCharsPerWord: Int = 100) {
        self.lowercase = lowercase
        self.stripAccents = stripAccents
        self.splitCJK = splitCJK
        self.maxLength = maxLength
        self.maxInputCharsPerWord = maxInputCharsPerWord
    }
}

/// BERT WordPiece tokenizer: text cleaning, whitespace and punctuation splitting, lower-casing
/// with accent stripping, CJK splitting, greedy longest-match WordPiece, `[CLS]`/`[SEP]` and
/// truncation. Gives the ids of Hugging Face `tokenizers`' `BertNormalizer` + `BertPreTokenizer` +
/// `WordPiece` pipeline (the fixture test checks this).
public final class WordPieceTokenizer: Sendable {
    /// The settings this tokenizer applies.
    public let settings: TokenizerSettings
    /// Token string to id.
    let vocabulary: [String: Int32]
    /// Number of entries in the vocabulary.
    public let vocabularySize: Int
    /// Id of `[CLS]`.
    public let clsId: Int32
    /// Id of `[SEP]`.
    public let sepId: Int32
    /// Id of `[UNK]`.
    public let unkId: Int32
    /// Id of `[PAD]`.
    public let padId: Int32
    /// Special tokens recognised verbatim in raw text (as `tokenizers` does with added tokens).
    let specialTokens: [(text: [Unicode.Scalar], id: Int32)]
    /// Length in scalars of the longest vocabulary entry; bounds the WordPiece search.
    let longestEntry: Int

    /// Loads `vocab.txt` (one token per line, the line number is the id).
    public convenience init(vocabularyFile url: URL, settings: TokenizerSettings = .init()) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError.missingFile(url.path, underlying: "\(error)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ModelError.invalidFile(url.path, reason: "vocabulary is not UTF-8")
        }
        var tokens = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasSuffix("\r") ? String($0.dropLast()) : String($0)
        }
        if tokens.last == "" { tokens.removeLast() }
        try self.init(tokens: tokens, settings: settings, source: url.path)
    }

    /// Builds a tokenizer from the vocabulary in id order.
    public init(tokens: [String], settings: TokenizerSettings = .init(), source: String = "vocabulary") throws {
        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(tokens.count)
        var longest = 0
        for (i, t) in tokens.enumerated() where vocabulary[t] == nil {
            vocabulary[t] = Int32(i)
            longest = max(longest, t.unicodeScalars.count)
        }
        func id(_ t: String) throws -> Int32 {
            guard let v = vocabulary[t] else {
                throw ModelError.invalidFile(source, reason: "vocabulary has no \(t) token")
            }
            return v
        }
        self.settings = settings
        self.vocabulary = vocabulary
        self.vocabularySize = tokens.count
        self.clsId = try id("[CLS]")
        self.sepId = try id("[SEP]")
        self.unkId = try id("[UNK]")
        self.padId = try id("[PAD]")
        self.longestEntry = longest + 2
        self.specialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].compactMap { t in
            vocabulary[t].map { (Array(t.unicodeScalars), $0) }
        }
    }

    /// Token ids of `text`: `[CLS]`, the WordPiece ids (truncated to `maxLength - 2`), `[SEP]`.
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = [clsId]
        let limit = max(settings.maxLength - 2, 0)
        var pieces: [Int32] = []
        pieces.reserveCapacity(64)
        forEachSegment(of: text) { segment, specialId in
            if let specialId { pieces.append(specialId); return }
            for word in words(of: segment) { wordPiece(word, into: &pieces) }
        }
        ids.append(contentsOf: pieces.prefix(limit))
        ids.append(sepId)
        return ids
    }

    /// The token strings of `ids` (for diagnostics).
    public func tokens(of ids: [Int32]) -> [String] {
        var inverse = [String](repeating: "", count: vocabularySize)
        for (t, i) in vocabulary { inverse[Int(i)] = t }
        return ids.map { Int($0) < inverse.count ? inverse[Int($0)] : "?" }
    }

    // MARK: - Pipeline

    /// Splits raw text around verbatim special tokens (they are not normalised, like `tokenizers`'
    /// added tokens with `normalized: false`), calling `body` for each plain segment or special id.
    private func forEachSegment(of text: String, _ body: ([Unicode.Scalar], Int32?) -> Void) {
        let scalars = Array(text.unicodeScalars)
        var start = 0, i = 0
        while i < scalars.count {
            if scalars[i] == "[", let (length, id) = specialToken(in: scalars, at: i) {
                if i > start { body(Array(scalars[start..<i]), nil) }
                body([], id)
                i += length
                start = i
            } else {
                i += 1
            }
        }
        if start < scalars.count { body(Array(scalars[start...]), nil) }
    }

    private func specialToken(in scalars: [Unicode.Scalar], at i: Int) -> (Int, Int32)? {
        var best: (Int, Int32)?
        for (text, id) in specialTokens where i + text.count <= scalars.count {
            if scalars[i..<(i + text.count)].elementsEqual(text), text.count > (best?.0 ?? 0) {
                best = (text.count, id)
            }
        }
        return best
    }

    /// Normalisation and pre-tokenisation: the words of one plain segment.
    func words(of segment: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        // Clean: drop NUL, U+FFFD and "other" characters; map whitespace to a space; pad CJK.
        var cleaned = String.UnicodeScalarView()
        for c in segment {
            if c.value == 0 || c.value == 0xFFFD || Self.isOther(c) { continue }
            if Self.isWhitespace(c) { cleaned.append(" "); continue }
            if settings.splitCJK && Self.isCJK(c) {
                cleaned.append(" "); cleaned.append(c); cleaned.append(" ")
            } else {
                cleaned.append(c)
            }
        }
        var text = String(cleaned)
        if settings.stripAccents ?? settings.lowercase {
            var stripped = String.UnicodeScalarView()
            for c in text.decomposedStringWithCanonicalMapping.unicodeScalars
            where c.properties.generalCategory != .nonspacingMark {
                stripped.append(c)
            }
            text = String(stripped)
        }
        var normalized: [Unicode.Scalar] = []
        normalized.reserveCapacity(text.unicodeScalars.count)
        if settings.lowercase {
            for c in text.unicodeScalars {
                if c.isASCII {
                    normalized.append(c.value >= 65 && c.value <= 90 ? Unicode.Scalar(c.value + 32)! : c)
                } else {
                    normalized.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
                }
            }
        } else {
            normalized.append(contentsOf: text.unicodeScalars)
        }
        // Pre-tokenise: split on whitespace; every punctuation character is a word of its own.
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for c in normalized {
            if Self.isWhitespace(c) {
                if !current.isEmpty { words.append(current); current = [] }
            } else if Self.isPunctuation(c) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([c])
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Greedy longest-match-first WordPiece; a word with an unmatchable rest is one `[UNK]`.
    func wordPiece(_ word: [Unicode.Scalar], into out: inout [Int32]) {
        if word.count > settings.maxInputCharsPerWord { out.append(unkId); return }
        let mark = out.count
        var start = 0
        while start < word.count {
            var end = min(word.count, start + longestEntry)
            var found: Int32?
            while end > start {
                var piece = start > 0 ? "##" : ""
                piece.unicodeScalars.append(contentsOf: word[start..<end])
                if let id = vocabulary[piece] { found = id; break }
                end -= 1
            }
            guard let id = found else {
                out.removeSubrange(mark...)
                out.append(unkId)
                return
            }
            out.append(id)
            start = end
        }
    }

    // MARK: - Character classes (as in BERT and `tokenizers`)

    static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        switch c { case " ", "\t", "\n", "\r": return true
        default: return c.properties.isWhitespace }
    }

    /// General category C (Cc, Cf, Cs, Co, Cn), except tab and newlines.
    static func isOther(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "\t", "\n", "\r": return false
        default:
            switch c.properties.generalCategory {
            case .control, .format, .surrogate, .privateUse, .unassigned: return true
            default: return false
            }
        }
    }

    /// ASCII punctuation (which includes `$`, `+`, `<`, `^`, `` ` ``, `|`, `~`) or Unicode P*.
    static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }

    static func isCJK(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default: return false
        }
    }
}
