import CRdKafka
import Foundation
import NewsdSystem

/// The one error type of `NewsdKafka`: librdkafka's error code, its message, and whether waiting
/// and trying again can help (broker down, timeouts, rebalances in progress).
public struct KafkaError: Error, CustomStringConvertible, RetryClassifiable, Sendable {
    /// librdkafka's `rd_kafka_resp_err_t` value (0 when the error is ours, e.g. a bad property).
    public var code: Int32
    /// What happened.
    public var message: String
    /// Whether trying again later can succeed.
    public var isRetriable: Bool

    /// An error from a librdkafka code.
    public init(code: rd_kafka_resp_err_t, context: String) {
        self.code = code.rawValue
        message = "\(context): \(String(cString: rd_kafka_err2str(code)))"
        switch code {
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
             RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
             RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
             RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
             RD_KAFKA_RESP_ERR__WAIT_COORD, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
            isRetriable = true
        default:
            isRetriable = false
        }
    }

    /// An error of ours (configuration), never retriable.
    public init(message: String) { code = 0; self.message = message; isRetriable = false }

    /// The message.
    public var description: String { message }

    /// librdkafka's symbolic name of the code (`_TRANSPORT`, `REQUEST_TIMED_OUT`), `local` for ours:
    /// a small closed set, fit for a metric label.
    public var name: String {
        code == 0 ? "local" : String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }
}

/// A topic and partition.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    /// Topic name.
    public var topic: String
    /// Partition number.
    public var partition: Int32
    /// Creates one.
    public init(topic: String, partition: Int32) { self.topic = topic; self.partition = partition }
    /// `topic[partition]`.
    public var description: String { "\(topic)[\(partition)]" }
}

/// One consumed record, copied out of librdkafka's buffers.
public struct KafkaRecord: Sendable {
    /// Where it was read.
    public var topicPartition: TopicPartition
    /// Its offset.
    public var offset: Int64
    /// Key bytes, if any.
    public var key: [UInt8]?
    /// Value bytes (empty for a null value).
    public var value: [UInt8]
    /// The record's timestamp (ms since the epoch), when the broker gave one.
    public var timestampMilliseconds: Int64?
}

/// Builds an `rd_kafka_conf_t` from string properties; errors name the property and value.
package final class KafkaConfiguration {
    private(set) var handle: OpaquePointer?

    package init(_ properties: [String: String]) throws {
        handle = rd_kafka_conf_new()
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            var error = [CChar](repeating: 0, count: 512)
            if rd_kafka_conf_set(handle, key, value, &error, error.count) != RD_KAFKA_CONF_OK {
                let shown = key.contains("password") || key.contains("secret") ? "***" : value
                throw KafkaError(message: "kafka property \(key)=\(shown): \(String(cString: error))")
            }
        }
    }

    /// Hands the configuration to `rd_kafka_new`, which owns it from then on.
    package func take() -> OpaquePointer? { defer { handle = nil }; return handle }

    deinit { if let handle { rd_kafka_conf_destroy(handle) } }
}

/// Creates an `rd_kafka_t` of the given type from a configuration it takes over.
package func makeKafkaHandle(_ type: rd_kafka_type_t, _ conf: KafkaConfiguration) throws -> OpaquePointer {
    var error = [CChar](repeating: 0, count: 512)
    let raw = conf.take()
    guard let rk = rd_kafka_new(type, raw, &error, error.count) else {
        if let raw { rd_kafka_conf_destroy(raw) }
        throw KafkaError(message: "cannot create Kafka client: \(String(cString: error))")
    }
    return rk
}

/// A topic-partition list owned by Swift for the duration of a call.
final class PartitionList {
    let handle: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(_ entries: [(TopicPartition, Int64?)]) {
        handle = rd_kafka_topic_partition_list_new(Int32(max(entries.count, 1)))
        for (tp, offset) in entries {
            let e = rd_kafka_topic_partition_list_add(handle, tp.topic, tp.partition)!
            if let offset { e.pointee.offset = offset }
        }
    }

    deinit { rd_kafka_topic_partition_list_destroy(handle) }

    static func entries(of list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [(TopicPartition, Int64)] {
        (0..<Int(list.pointee.cnt)).map { i in
            let e = newsd_kafka_partition_at(list, Int32(i))!.pointee
            return (TopicPartition(topic: String(cString: e.topic), partition: e.partition), e.offset)
        }
    }
}
