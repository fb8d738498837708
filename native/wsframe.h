/*
 * RFC 6455 client frame pieces shared by native/wsframe.c (encode) and
 * native/outbox.c (the stream queue's framed take): the header with its
 * masking key (5.2) and the masked payload (5.3).  Header-only (static
 * inline), so each C file gets its own copy inlined where it is used.
 */
#ifndef RTP2WS_WSFRAME_H
#define RTP2WS_WSFRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_PING 0x9

/* Bytes of header (with the 4-byte masking key) before an n-byte payload:
   2 bytes, the extended length (0, 2 or 8 bytes) and the key. */
static inline size_t
ws_header_len(size_t n)
{
    return n < 126 ? 6 : n < 65536 ? 8 : 14;
}

/* FIN, RSV = 0, opcode; MASK, the payload length; the key.  Returns the end. */
static inline uint8_t *
ws_put_header(uint8_t *out, int opcode, size_t n, const uint8_t *key)
{
    *out++ = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        *out++ = (uint8_t)(0x80 | n);
    }
    else if (n < 65536) {
        *out++ = 0x80 | 126;
        *out++ = (uint8_t)(n >> 8);
        *out++ = (uint8_t)n;
    }
    else {
        uint64_t v = (uint64_t)n;
        *out++ = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            *out++ = (uint8_t)(v >> shift);
    }
    memcpy(out, key, 4);
    return out + 4;
}

/* n bytes of src XOR-ed with the key, which repeats every 4 bytes from src[0].
   8 bytes at a time XOR with the key twice over; unaligned access goes through
   memcpy, which compilers turn into plain loads and stores.  Returns the end. */
static inline uint8_t *
ws_put_masked(uint8_t *out, const uint8_t *src, size_t n, const uint8_t *key)
{
    uint32_t k32;
    uint64_t k64;
    memcpy(&k32, key, 4);
    k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(out + i, &w, 8);
    }
    for (; i < n; i++)
        out[i] = src[i] ^ key[i & 3];
    return out + n;
}

/* ws_put_masked for a payload written in pieces: this piece starts `phase`
   bytes into the payload (its key byte is key[phase & 3]). */
static inline uint8_t *
ws_put_masked_at(uint8_t *out, const uint8_t *src, size_t n, const uint8_t *key, size_t phase)
{
    uint8_t rotated[4];
    for (int i = 0; i < 4; i++)
        rotated[i] = key[(phase + (size_t)i) & 3];
    return ws_put_masked(out, src, n, rotated);
}

#endif
