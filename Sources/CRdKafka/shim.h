#ifndef NEWSD_CRDKAFKA_SHIM_H
#define NEWSD_CRDKAFKA_SHIM_H
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/// Typed wrapper of the variadic rd_kafka_producev: copies value and key; partition may be
/// RD_KAFKA_PARTITION_UA (let the partitioner choose); key may be NULL.
static inline rd_kafka_resp_err_t newsd_kafka_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                      const void *value, size_t value_len,
                                                      const void *key, size_t key_len) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_VALUE((void *)value, value_len),
                             RD_KAFKA_V_KEY((void *)key, key_len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END);
}

/// The topic-partition element at index i of a list (Swift cannot index the C array directly).
static inline rd_kafka_topic_partition_t *newsd_kafka_partition_at(rd_kafka_topic_partition_list_t *list, int i) {
    return &list->elems[i];
}
#endif
