/* agn_common.c: the status names of agn_common.h. */
#include "agn_common.h"

const char *agn_status_name(agn_status status)
{
    switch (status) {
    case AGN_OK: return "AGN_OK";
    case AGN_ERR_ARG: return "AGN_ERR_ARG";
    case AGN_ERR_NOSPACE: return "AGN_ERR_NOSPACE";
    case AGN_ERR_ALIGN: return "AGN_ERR_ALIGN";
    case AGN_ERR_INTERNAL: return "AGN_ERR_INTERNAL";
    case AGN_ERR_DATA: return "AGN_ERR_DATA";
    case AGN_ERR_FRAME: return "AGN_ERR_FRAME";
    case AGN_ERR_VERSION: return "AGN_ERR_VERSION";
    case AGN_ERR_TOO_LONG: return "AGN_ERR_TOO_LONG";
    }
    return "AGN_ERR_UNKNOWN";
}
