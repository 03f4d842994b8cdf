import CRdKafka
import Foundation

/// A producer (for `newsd produce`, the demo and tests). Owns its `rd_kafka_t`.
///
/// `@unchecked Sendable`: the only state is the `rd_kafka_t`, and librdkafka's handle is
/// thread-safe (its own locks); nothing else is mutable.
public final class KafkaProducer: @unchecked Sendable {
    private let handle: OpaquePointer

    /// Creates a producer with extra librdkafka `properties`.
    public init(brokers: String, properties: [String: String] = [:]) throws {
        var props = properties
        props["bootstrap.servers"] = brokers
        if props["linger.ms"] == nil { props["linger.ms"] = "5" }
        handle = try makeKafkaHandle(RD_KAFKA_PRODUCER, try KafkaConfiguration(props))
    }

    deinit {
        _ = rd_kafka_flush(handle, 10_000)
        rd_kafka_destroy(handle)
    }

    /// Queues one record; waits (serving delivery reports) while the local queue is full.
    public func send(topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]) throws {
        while true {
            let err = value.withUnsafeBytes { v in
                (key ?? []).withUnsafeBytes { k in
                    newsd_kafka_produce(handle, topic, partition ?? RD_KAFKA_PARTITION_UA, v.baseAddress, v.count,
                                        key == nil ? nil : k.baseAddress, key == nil ? 0 : k.count)
                }
            }
            if err == RD_KAFKA_RESP_ERR_NO_ERROR { break }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL { rd_kafka_poll(handle, 100); continue }
            throw KafkaError(code: err, context: "produce to \(topic)")
        }
        rd_kafka_poll(handle, 0)
    }

    /// Waits up to `timeout` seconds until every queued record is delivered.
    public func flush(timeout: Double = 30) throws {
        let err = rd_kafka_flush(handle, Int32(timeout * 1000))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(code: err, context: "flush") }
    }
}
