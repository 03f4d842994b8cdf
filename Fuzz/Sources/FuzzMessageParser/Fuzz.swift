import FuzzSupport
import NewsdIngest

/// Any bytes as a Kafka message: the parser returns an item or a reason, never crashes or hangs;
/// an accepted item respects every limit.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessageParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let limits = MessageParser.Limits()
    let parser = MessageParser(limits: limits)
    if case let .success(item) = parser.parse(Array(UnsafeBufferPointer(start: data, count: size))) {
        precondition(!item.text.isEmpty && item.text.utf8.count <= limits.textBytes)
        precondition((item.externalID?.utf8.count ?? 0) <= limits.idBytes && (item.source?.utf8.count ?? 0) <= limits.sourceBytes)
        precondition(item.companies.count <= limits.companies && item.companies.allSatisfy { $0.utf8.count <= limits.companyIdBytes })
        precondition(!item.text.unicodeScalars.contains("\u{0}"))
    }
    return 0
}

@_cdecl("FuzzMessageParser_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runLibFuzzer(argc, argv, fuzzMessageParser) }
