import Foundation
import Testing
@testable import NewsdSystem

@Suite struct DedicatedTaskExecutorTests {
    /// Tasks preferring the executor run on its own threads, not on the cooperative pool nor on
    /// dispatch's shared pool (which the encoder's `concurrentPerform` keeps busy).
    @Test func tasksRunOnTheExecutorsOwnThreads() async {
        let executor = DedicatedTaskExecutor(label: "test-dedicated", threads: 2)
        let onIt = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 { group.addTask(executorPreference: executor) { executor.isCurrentThread } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(onIt == Array(repeating: true, count: 8))
        #expect(!executor.isCurrentThread)
    }
}
