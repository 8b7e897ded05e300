/* The native packet pump of benchmarks/spike/native_pump.py: one call per 20 ms tick sends
 * every call's packet (RTP header fields filled in, SRTP through libsrtp as pylibsrtp linked
 * it, one sendmmsg), or receives a batch (one recvmmsg, SRTP unprotect, header read). */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

typedef int (*srtp_fn)(void *ctx, void *packet, int *length);

#define SLOT 1500
#define MAX_BATCH 1024

/* Packet i lives in buf + i * SLOT with lens[i] bytes of RTP (header + payload); its
 * sequence number and timestamp are advanced, it is protected with ctxs[i] and sent to
 * dests[i]. Returns the number of datagrams sent. */
int send_batch(srtp_fn protect, void **ctxs, int fd, unsigned char *buf, int *lens,
               struct sockaddr_in *dests, int count, uint32_t step) {
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    static unsigned char out[MAX_BATCH][SLOT];
    if (count > MAX_BATCH) return -1;
    for (int i = 0; i < count; i++) {
        unsigned char *p = buf + (size_t)i * SLOT;
        uint16_t seq = (uint16_t)((p[2] << 8 | p[3]) + 1);
        uint32_t ts = ((uint32_t)p[4] << 24 | p[5] << 16 | p[6] << 8 | p[7]) + step;
        p[2] = seq >> 8; p[3] = seq;
        p[4] = ts >> 24; p[5] = ts >> 16; p[6] = ts >> 8; p[7] = ts;
        int length = lens[i];
        memcpy(out[i], p, length);
        if (protect(ctxs[i], out[i], &length) != 0) return -2;
        iov[i].iov_base = out[i];
        iov[i].iov_len = length;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_name = &dests[i];
        msgs[i].msg_hdr.msg_namelen = sizeof dests[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return sendmmsg(fd, msgs, count, 0);
}

/* Receive up to `count` datagrams at once (non-blocking), unprotect each with the context
 * of its SSRC (ssrc < nctx) and count the payload bytes. Returns datagrams handled. */
int recv_batch(srtp_fn unprotect, void **ctxs, int nctx, int fd, int count, long *payload) {
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    static unsigned char in[MAX_BATCH][SLOT];
    if (count > MAX_BATCH) return -1;
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = in[i];
        iov[i].iov_len = SLOT;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(fd, msgs, count, MSG_DONTWAIT, NULL);
    for (int i = 0; i < got; i++) {
        unsigned char *p = in[i];
        int length = msgs[i].msg_len;
        uint32_t ssrc = (uint32_t)p[8] << 24 | p[9] << 16 | p[10] << 8 | p[11];
        if (ssrc >= (uint32_t)nctx || unprotect(ctxs[ssrc], p, &length) != 0) continue;
        *payload += length - 12 - 4 * (p[0] & 0x0F);
    }
    return got;
}
