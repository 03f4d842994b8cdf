import FuzzSupport
import NewsdOps

/// Any text as the configuration file: a configuration or a `ConfigurationError`, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do { _ = try NewsdConfiguration.load(toml: text, source: "fuzz", environment: [:], requireModel: false) } catch is ConfigurationError {
    } catch {
        preconditionFailure("not a ConfigurationError: \(error)")
    }
    return 0
}

@_cdecl("FuzzConfiguration_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runLibFuzzer(argc, argv, fuzzConfiguration) }
