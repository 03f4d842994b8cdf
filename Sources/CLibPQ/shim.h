#ifndef NEWSD_CLIBPQ_SHIM_H
#define NEWSD_CLIBPQ_SHIM_H
// Debian installs libpq's header under postgresql/ and ships no pkg-config file for it.
#include <postgresql/libpq-fe.h>
#endif
