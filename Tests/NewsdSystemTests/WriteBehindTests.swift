import Foundation
import Testing
@testable import NewsdSystem

/// The ingest loop's write stage. No timing: a job that must still be running is held on a
/// semaphore, so every expectation holds whatever the scheduler does.
@Suite struct WriteBehindTests {
    struct Refused: Error {}

    @Test func jobsRunInOrderOnTheStagesThread() throws {
        let stage = WriteBehind(name: "test-write")
        defer { stage.close() }
        let done = LockedValue<[Int]>([])
        let caller = Thread.current
        let elsewhere = LockedValue(true)
        for i in 0..<20 {
            try stage.submit {
                if Thread.current == caller { elsewhere.withLock { $0 = false } }
                done.withLock { $0.append(i) }
            }
        }
        try stage.drain()
        #expect(done.value == Array(0..<20))
        #expect(elsewhere.value)
        #expect(!stage.isBusy)
    }

    /// A failed write is reported to the loop at its next hand-over, and the batch handed over
    /// then is not written (its offsets stay unstored, so it is read again).
    @Test func aJobsErrorIsRethrownByTheNextSubmitWhichDoesNotRun() throws {
        let stage = WriteBehind(name: "test-write")
        defer { stage.close() }
        let ran = LockedValue(false)
        try stage.submit { throw Refused() }
        #expect(throws: Refused.self) { try stage.submit { ran.withLock { $0 = true } } }
        try stage.drain()
        #expect(!ran.value)
        try stage.submit { ran.withLock { $0 = true } }
        try stage.drain()
        #expect(ran.value)
    }

    /// A rebalance waits with `waitIdle`, which cannot throw: the error stays for the loop.
    @Test func waitIdleKeepsTheErrorForTheLoop() throws {
        let stage = WriteBehind(name: "test-write")
        defer { stage.close() }
        try stage.submit { throw Refused() }
        stage.waitIdle()
        #expect(throws: Refused.self) { try stage.drain() }
        try stage.drain()
    }

    /// At most one job at a time: a second hand-over waits until the first job has finished.
    @Test func aSecondSubmitWaitsForTheJobInFlight() throws {
        let stage = WriteBehind(name: "test-write")
        defer { stage.close() }
        let release = DispatchSemaphore(value: 0), started = DispatchSemaphore(value: 0)
        let order = LockedValue<[String]>([])
        try stage.submit {
            started.signal()
            release.wait()
            order.withLock { $0.append("first") }
        }
        started.wait()
        #expect(stage.isBusy)
        let submitted = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? stage.submit { order.withLock { $0.append("second") } }
            submitted.signal()
        }
        #expect(order.value.isEmpty)   // the first job is held, so nothing can have run
        release.signal()
        submitted.wait()
        try stage.drain()
        #expect(order.value == ["first", "second"])
    }
}
