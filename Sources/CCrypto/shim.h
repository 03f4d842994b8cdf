#ifndef NEWSD_CCRYPTO_SHIM_H
#define NEWSD_CCRYPTO_SHIM_H
// SHA-256 (artifact and checkpoint checksums) and HMAC-SHA256 (alert webhook signatures).
#include <openssl/evp.h>
#include <openssl/sha.h>
// HMAC-SHA256: the alert webhook signature.
#include <openssl/hmac.h>
#endif
