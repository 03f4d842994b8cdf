import Testing
@testable import NewsdTeacher

@Suite struct AnswerParserTests {
    let parser = AnswerParser(labels: ["positive", "negative", "neutral"])

    @Test(arguments: [
        (#"{"reason": "Profit rose.", "label": "positive"}"#, "positive", ParseStage.strict),
        (#"{"Label": "Negative", "reason": "cut jobs"}"#, "negative", .strict),
        ("Sure! Here is my answer:\n```json\n{\"reason\": \"figures only\", \"label\": \"neutral\"}\n```", "neutral", .tolerant),
        ("{'reason': 'sales fell', 'label': 'negative',}", "negative", .tolerant),
        (#"Answer: {'reason': "it's up", 'label': 'positive'} done"#, "positive", .tolerant),
        ("The sentiment is clearly Positive for investors.", "positive", .wordMatch),
        (#"{"label": "neutral leaning"}"#, "neutral", .strict),
    ])
    func readsLabels(reply: String, label: String, stage: ParseStage) {
        guard case let .label(l, _, s) = parser.parse(reply) else { Issue.record("FAIL for \(reply)"); return }
        #expect(l == label && s == stage, "\(reply) -> \(l) via \(s)")
    }

    @Test(arguments: ["", "I cannot tell.", "positive or negative, hard to say", #"{"label": "bullish"}"#,
                      #"{"label": "neutral leaning towards positive"}"#])
    func failsRatherThanGuessing(reply: String) {
        #expect(parser.parse(reply).label == nil, "\(reply)")
    }

    @Test func keepsTheReason() {
        guard case let .label(_, reason, _) = parser.parse(#"{"reason": "An increase in profit.", "label": "positive"}"#) else {
            Issue.record("FAIL"); return
        }
        #expect(reason == "An increase in profit.")
    }
}

@Suite struct SelfConsistencyTests {
    func answers(_ labels: [String?]) -> [TeacherAnswer] {
        labels.map { $0.map { TeacherAnswer.label($0, reason: nil, stage: .strict) } ?? .fail("x") }
    }

    @Test func majorityOfThreeLabelsWithItsVoteShares() {
        let d = SelfConsistency.decide(answers(["positive", "neutral", "positive"]), k: 3, extra: 2)
        #expect(d == .labelled("positive", distribution: ["positive": 2.0 / 3, "neutral": 1.0 / 3]))
    }

    @Test func splitsAskForMoreThenBecomeAmbiguous() {
        #expect(SelfConsistency.decide(answers(["positive"]), k: 3, extra: 2) == .askMore(2))
        #expect(SelfConsistency.decide(answers(["positive", "neutral", nil]), k: 3, extra: 2) == .askMore(1))
        // Replayed samples (as from a recorded teacher) never turn a split into a label.
        #expect(SelfConsistency.decide(answers(["positive", "neutral", nil, "positive"]), k: 3, extra: 2) == .askMore(1))
        let last = SelfConsistency.decide(answers(["positive", "neutral", nil, "positive", "neutral"]), k: 3, extra: 2)
        #expect(last == .ambiguous(distribution: ["positive": 0.5, "neutral": 0.5]))
        // An extra sample can settle a tie when it really agrees.
        #expect(SelfConsistency.decide(answers(["negative", nil, "neutral", "negative", "negative"]), k: 3, extra: 2)
                == .labelled("negative", distribution: ["negative": 0.75, "neutral": 0.25]))
    }
}

@Suite struct PromptTemplateTests {
    @Test func defaultTemplateAsksForJSONWithTheTextAndLabels() {
        let m = PromptTemplate.investorSentiment.render(text: "Nokia cut 300 jobs .", labels: ["positive", "negative", "neutral"])
        #expect(m.map(\.role) == ["system", "user"])
        #expect(m[1].content.contains("Text: Nokia cut 300 jobs .\nAnswer:"))
        #expect(m[1].content.contains(#"Possible labels: "positive", "negative", "neutral"."#))
        #expect(m[1].content.contains(#"{"reason":"#) && m[1].content.contains("not from anything you know about the company"))
    }

    @Test func customTemplatesServeOtherTasksAndMissingPartsAreNamed() throws {
        let t = try PromptTemplate(parsing: "=== user ===\nIs this spam ({{labels}})? {{text}}")
        #expect(t.render(text: "WIN NOW", labels: ["spam", "ham"]) == [ChatMessage(role: "user", content: #"Is this spam ("spam", "ham")? WIN NOW"#)])
        #expect(throws: TeacherError.self) { try PromptTemplate(parsing: "=== system ===\nhi") }
        #expect(throws: TeacherError.self) { try PromptTemplate(parsing: "=== user ===\nno placeholder") }
    }
}
