import CRdKafka
import Foundation
import NewsdHTTP
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdSystem
import NewsdTeacher


/// librdkafka's mock cluster: a real Kafka-protocol server on loopback for development and tests,
/// with fault injection. Owns the `rd_kafka_t` that hosts it and the cluster.
///
/// `@unchecked Sendable`: the only state is the two librdkafka handles, which librdkafka locks
/// itself (the mock cluster API is thread-safe); nothing else is mutable.
public final class MockCluster: @unchecked Sendable {
    private let host: OpaquePointer
    private let cluster: OpaquePointer
    /// Bootstrap servers to give clients.
    public let bootstrapServers: String

    /// Starts `brokers` mock brokers.
    public init(brokers: Int = 1) throws {
        host = try makeKafkaHandle(RD_KAFKA_PRODUCER, try KafkaConfiguration(["log_level": "3"]))
        guard let c = rd_kafka_mock_cluster_new(host, Int32(brokers)) else {
            rd_kafka_destroy(host)
            throw KafkaError(message: "cannot start the mock cluster")
        }
        cluster = c
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(c))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(host)
    }

    /// Creates a topic with `partitions` partitions.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) throws {
        let err = rd_kafka_mock_topic_create(cluster, name, Int32(partitions), Int32(replicationFactor))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(code: err, context: "create topic \(name)") }
    }

    /// Takes a broker down (connections are closed and refused) or brings it back.
    public func setBroker(_ id: Int32, up: Bool) throws {
        let err = up ? rd_kafka_mock_broker_set_up(cluster, id) : rd_kafka_mock_broker_set_down(cluster, id)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(code: err, context: "set broker \(id) \(up ? "up" : "down")") }
    }

    /// Adds round-trip latency to a broker's responses.
    public func setLatency(broker id: Int32, milliseconds: Int) throws {
        let err = rd_kafka_mock_broker_set_rtt(cluster, id, Int32(milliseconds))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(code: err, context: "set rtt") }
    }

    /// Makes the next `count` requests of an API (e.g. Fetch = 1, Produce = 0, OffsetCommit = 8,
    /// Heartbeat = 12) fail with `error` (a Kafka error code, e.g. 7 REQUEST_TIMED_OUT).
    public func pushRequestErrors(apiKey: Int16, count: Int, error: Int32) {
        var errors = [rd_kafka_resp_err_t](repeating: rd_kafka_resp_err_t(rawValue: error), count: count)
        rd_kafka_mock_push_request_errors_array(cluster, apiKey, count, &errors)
    }
}
