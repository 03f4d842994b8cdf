import Dispatch

/// Monotonic seconds (not wall time): for durations, rates and deadlines inside one process.
public func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
