#ifndef NEWSD_CCRYPTO_SHIM_H
#define NEWSD_CCRYPTO_SHIM_H
// Only SHA-256 is used: artifact and checkpoint checksums.
#include <openssl/evp.h>
#include <openssl/sha.h>
#endif
