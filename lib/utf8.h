/* UTF-8 validation, for text that goes into JSON. */
#ifndef STG_UTF8_H
#define STG_UTF8_H

#include <stddef.h>

/* The length (1-4) of the valid UTF-8 sequence at s, which has n > 0 bytes
 * left, or 0 when the bytes there are not valid UTF-8 (overlong forms,
 * surrogates and code points past U+10FFFF are not). An ASCII byte,
 * NUL included, is a sequence of 1. */
size_t stg_utf8_seq(const unsigned char *s, size_t n);

#endif
