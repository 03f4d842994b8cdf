#ifndef NEWSD_CCURL_SHIM_H
#define NEWSD_CCURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt, curl_easy_getinfo and curl_multi_setopt are variadic, which Swift cannot
   call: one typed wrapper per argument type. */

typedef size_t (*newsd_curl_data_callback)(char *data, size_t size, size_t count, void *user);

static inline CURLcode newsd_curl_setopt_long(CURL *h, CURLoption option, long value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_setopt_string(CURL *h, CURLoption option, const char *value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_setopt_pointer(CURL *h, CURLoption option, void *value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_setopt_slist(CURL *h, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_setopt_callback(CURL *h, CURLoption option, newsd_curl_data_callback value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_setopt_size(CURL *h, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(h, option, value);
}
static inline CURLcode newsd_curl_getinfo_long(CURL *h, CURLINFO info, long *value) {
    return curl_easy_getinfo(h, info, value);
}
static inline CURLcode newsd_curl_getinfo_pointer(CURL *h, CURLINFO info, void **value) {
    return curl_easy_getinfo(h, info, value);
}
static inline CURLMcode newsd_curl_multi_setopt_long(CURLM *m, CURLMoption option, long value) {
    return curl_multi_setopt(m, option, value);
}
#endif
