import FuzzSupport
import NewsdTeacher

/// Any text as a teacher's reply: a label among the allowed ones, or FAIL.
let parser = AnswerParser(labels: ["negative", "neutral", "positive"])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAnswerParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let label = parser.parse(text).label { precondition(["negative", "neutral", "positive"].contains(label)) }
    return 0
}

@_cdecl("FuzzAnswerParser_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runLibFuzzer(argc, argv, fuzzAnswerParser) }
