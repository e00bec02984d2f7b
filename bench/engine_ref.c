/* The feature kernel of app/features.py in C: the machine's reference for bench/engine.py.
 *
 * The same seven features, the same arithmetic in the same order (so the same bits), on
 * the same layout: one 64-byte-aligned record per symbol (app/state.py: 15 float words,
 * 6 integer words, the venue row, padding to word 24, then the four rings interleaved per
 * slot), the same session lookup and gap reset, and the same prefetching ahead in a batch
 * (-DNO_PREFETCH leaves it out). bench/engine.py builds it at run time with the machine's
 * gcc (-O3 -march=native) and calls it through ctypes, one call per batch, as the engine
 * is called; it is never committed as a binary.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { F_LAST_PRICE, F_LAST_LOG_PRICE, F_EMA_FAST, F_EMA_SLOW, F_RSI_GAIN, F_RSI_LOSS,
       F_VOL_SUM, F_VOL_SUM_SQ, F_Z_MEAN, F_Z_M2, F_VWAP_PV, F_VWAP_V, F_OFI_SIGNED,
       F_OFI_TOTAL, F_VOL_SHIFT };
enum { W_COUNT = 15, W_LAST_TS, W_SESSION_OPEN, W_LAST_SIGN, W_VOL_COUNTDOWN, W_SESSION_IDX,
       W_VENUE };
enum { R_PRICE, R_LOG_RETURN, R_SIGNED_SIZE, R_SIZE };
#define RING_BASE 24
#define PREFETCH_RECORD 8
#define PREFETCH_RING 4
#define PREFETCH_ABOVE_BYTES (1 << 20)
#define NO_SESSION (INT64_MIN + 1)

typedef union { double f; int64_t i; } word;

#define F(s, k) rec[(int64_t)(s) * rw + (k)].f
#define I(s, k) rec[(int64_t)(s) * rw + (k)].i
#define RING(s, slot, r) rec[(int64_t)(s) * rw + RING_BASE + (slot) * 4 + (r)].f

static inline double ema_step(word *rec, int64_t rw, int field, int32_t s, int64_t k,
                              int64_t period, double alpha, double p) {
    if (k < period - 1) { F(s, field) += p; return NAN; }
    if (k == period - 1) { double seeded = (F(s, field) + p) / period; F(s, field) = seeded; return seeded; }
    double ema = F(s, field);
    ema = ((p - ema) * alpha) + ema;
    F(s, field) = ema;
    return ema;
}

static inline double var_step(word *rec, int64_t rw, int32_t s, int64_t j, int64_t w,
                              double inv_n, int64_t last, int64_t first) {
    if (j == 0) {
        F(s, F_VOL_SHIFT) = RING(s, 0, R_LOG_RETURN);
        F(s, F_VOL_SUM) = 0.0; F(s, F_VOL_SUM_SQ) = 0.0;
        I(s, W_VOL_COUNTDOWN) = 32 * w;
    }
    double shift = F(s, F_VOL_SHIFT);
    double d = RING(s, last, R_LOG_RETURN) - shift;
    double s1 = F(s, F_VOL_SUM) + d;
    double s2 = F(s, F_VOL_SUM_SQ) + d * d;
    if (j < w - 1) { F(s, F_VOL_SUM) = s1; F(s, F_VOL_SUM_SQ) = s2; return 0.0; }
    double mean1 = inv_n * s1;
    double var = inv_n * s2 - mean1 * mean1;
    double t = RING(s, first, R_LOG_RETURN) - shift;
    double t2 = t * t;
    s2 -= t2;
    int64_t countdown = I(s, W_VOL_COUNTDOWN);
    int recompute = (inv_n * s2) * 1e-6 > var || t2 > s2 * 1e6;
    if (!recompute) { countdown -= 1; recompute = countdown == 0; }
    if (recompute) {
        double acc = 0.0;
        for (int64_t i = 0; i < w; i++) acc += RING(s, (first + i) % w, R_LOG_RETURN);
        shift = acc * inv_n;
        s1 = 0.0; s2 = 0.0;
        for (int64_t i = 0; i < w; i++) {
            double dd = RING(s, (first + i) % w, R_LOG_RETURN) - shift;
            s1 += dd; s2 += dd * dd;
        }
        mean1 = inv_n * s1;
        double mean2 = inv_n * s2;
        var = mean2 - mean1 * mean1;
        if (var < mean2 * 1e-12) var = 0.0;
        t = RING(s, first, R_LOG_RETURN) - shift;
        s2 -= t * t;
        countdown = 32 * w;
        F(s, F_VOL_SHIFT) = shift;
    }
    F(s, F_VOL_SUM) = s1 - t;
    F(s, F_VOL_SUM_SQ) = s2;
    I(s, W_VOL_COUNTDOWN) = countdown;
    return var;
}

static inline int64_t session_index(const int64_t *opens, int64_t width, int64_t v, int64_t j,
                                    int64_t ts) {
    const int64_t *row = opens + v * width;
    if (j >= 0 && j < width - 2 && row[j] <= ts) {
        if (row[j + 1] > ts) return j;
        if (row[j + 2] > ts) return j + 1;
    }
    int64_t lo = 0, hi = width;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (row[mid] <= ts) lo = mid + 1; else hi = mid;
    }
    return lo - 1;
}

/* params: ema_fast, ema_slow, rsi_period, window, session_ns, max_gap_ns.
 * cal: [2, venues, width] opens then closes (venues == 0: fixed session_ns sessions). */
int64_t update(int64_t n, const int32_t *symbol, const double *price, const double *size,
               const int64_t *ts_ns, word *rec, int64_t n_symbols, int64_t rw,
               const int64_t *params, const int64_t *cal, int64_t venues, int64_t width,
               double *out, uint8_t *reasons) {
    int64_t p_fast = params[0], p_slow = params[1], p_rsi = params[2], w = params[3];
    int64_t session_ns = params[4], max_gap_ns = params[5];
    double k_fast = 2.0 / (p_fast + 1), k_slow = 2.0 / (p_slow + 1), inv_w = 1.0 / w;
    const int64_t *opens = cal, *closes = cal + venues * width;
    int64_t accepted = 0;
#ifndef NO_PREFETCH
    int prefetching = n_symbols * rw * 8 > PREFETCH_ABOVE_BYTES;
#endif
    for (int64_t t = 0; t < n; t++) {
#ifndef NO_PREFETCH
        if (prefetching) {
            int64_t u = t + PREFETCH_RECORD;
            if (u < n && symbol[u] >= 0 && symbol[u] < n_symbols) {
                word *r = rec + (int64_t)symbol[u] * rw;
                __builtin_prefetch(r, 1, 3); __builtin_prefetch(r + 8, 1, 3);
                __builtin_prefetch(r + 16, 1, 3);
            }
            u = t + PREFETCH_RING;
            if (u < n && symbol[u] >= 0 && symbol[u] < n_symbols) {
                int32_t su = symbol[u];
                int64_t slot = I(su, W_COUNT) % w;
                __builtin_prefetch(&RING(su, slot, 0), 1, 3);
                __builtin_prefetch(&RING(su, slot > 0 ? slot - 1 : w - 1, 0), 1, 3);
            }
        }
#endif
        int32_t s = symbol[t];
        double p = price[t], q = size[t];
        int64_t ts = ts_ns[t];
        double *o = out + t * 7;
        uint8_t reason = 0;
        if (s < 0 || s >= n_symbols) reason = 1;
        else if (!(p > 0.0 && p < INFINITY)) reason = 2;
        else if (!(q >= 0.0 && q < INFINITY)) reason = 3;
        else if (ts < I(s, W_LAST_TS)) reason = 4;
        reasons[t] = reason;
        if (reason) { for (int c = 0; c < 7; c++) o[c] = NAN; continue; }
        accepted++;
        if (max_gap_ns > 0 && I(s, W_COUNT) > 0 && ts - I(s, W_LAST_TS) > max_gap_ns) {
            for (int f = 0; f < 15; f++) if (f != F_VWAP_PV && f != F_VWAP_V) F(s, f) = 0.0;
            I(s, W_COUNT) = 0; I(s, W_LAST_SIGN) = 0; I(s, W_VOL_COUNTDOWN) = 0;
        }
        int64_t k = I(s, W_COUNT);
        int64_t slot = k % w;
        double log_p = log(p);
        double prev_p = F(s, F_LAST_PRICE);
        o[0] = ema_step(rec, rw, F_EMA_FAST, s, k, p_fast, k_fast, p);
        o[1] = ema_step(rec, rw, F_EMA_SLOW, s, k, p_slow, k_slow, p);
        o[2] = NAN;
        if (k >= 1) {
            double diff = p - prev_p, gain = F(s, F_RSI_GAIN), loss = F(s, F_RSI_LOSS);
            if (k > p_rsi) { loss *= p_rsi - 1; gain *= p_rsi - 1; }
            if (diff < 0) loss -= diff; else gain += diff;
            if (k >= p_rsi) {
                loss /= p_rsi; gain /= p_rsi;
                double total = gain + loss;
                o[2] = total != 0.0 ? 100.0 * (gain / total) : 50.0;
            }
            F(s, F_RSI_GAIN) = gain; F(s, F_RSI_LOSS) = loss;
        }
        o[3] = NAN;
        if (k >= 1) {
            int64_t j = k - 1, last = slot > 0 ? slot - 1 : w - 1;
            RING(s, last, R_LOG_RETURN) = log_p - F(s, F_LAST_LOG_PRICE);
            double var = var_step(rec, rw, s, j, w, inv_w, last, slot);
            if (j >= w - 1) o[3] = var > 0.0 ? sqrt(var) : 0.0;
        }
        double mean = F(s, F_Z_MEAN), m2 = F(s, F_Z_M2);
        int resync = slot == w - 1;
        if (k < w) {
            double delta = p - mean;
            mean += delta / (k + 1);
            m2 += delta * (p - mean);
        } else {
            double old = RING(s, slot, R_PRICE);
            double new_mean = mean + (p - old) / w;
            double dev_old = old - mean;
            m2 += (p - old) * (p - new_mean + dev_old);
            mean = new_mean;
            resync = resync || m2 < 0.0 || dev_old * dev_old > m2 * 1e6;
        }
        RING(s, slot, R_PRICE) = p;
        if (resync) {
            double acc = 0.0;
            for (int64_t i = 0; i < w; i++) acc += RING(s, i, R_PRICE);
            mean = acc / w;
            m2 = 0.0;
            for (int64_t i = 0; i < w; i++) { double d = RING(s, i, R_PRICE) - mean; m2 += d * d; }
        }
        F(s, F_Z_MEAN) = mean; F(s, F_Z_M2) = m2;
        if (k >= w - 1) {
            double sd = m2 > 0.0 ? sqrt(m2 / w) : 0.0;
            o[4] = sd > 1e-12 * fabs(mean) ? (p - mean) / sd : 0.0;
        } else o[4] = NAN;
        int in_session = 1;
        int64_t session;
        if (venues > 0) {
            int64_t venue = I(s, W_VENUE);
            int64_t j = session_index(opens, width, venue, I(s, W_SESSION_IDX), ts);
            I(s, W_SESSION_IDX) = j;
            if (j < 0) { session = NO_SESSION; in_session = 0; }
            else { session = opens[venue * width + j]; in_session = ts < closes[venue * width + j]; }
        } else {
            /* Python's floor division (ts >= 0 here in practice; kept exact for negatives). */
            int64_t qd = ts / session_ns;
            if ((ts % session_ns != 0) && ((ts < 0) != (session_ns < 0))) qd -= 1;
            session = qd * session_ns;
        }
        double pv = F(s, F_VWAP_PV), v = F(s, F_VWAP_V);
        if (session != I(s, W_SESSION_OPEN)) { I(s, W_SESSION_OPEN) = session; pv = 0.0; v = 0.0; }
        if (in_session) { pv += p * q; v += q; }
        F(s, F_VWAP_PV) = pv; F(s, F_VWAP_V) = v;
        o[5] = v > 0.0 ? pv / v : p;
        int64_t sign = I(s, W_LAST_SIGN);
        if (k >= 1) { if (p > prev_p) sign = 1; else if (p < prev_p) sign = -1; }
        I(s, W_LAST_SIGN) = sign;
        double signed_q = sign * q;
        double osum = F(s, F_OFI_SIGNED) + signed_q, otot = F(s, F_OFI_TOTAL) + q;
        if (k >= w) { osum -= RING(s, slot, R_SIGNED_SIZE); otot -= RING(s, slot, R_SIZE); }
        RING(s, slot, R_SIGNED_SIZE) = signed_q;
        RING(s, slot, R_SIZE) = q;
        if (slot == w - 1) {
            osum = 0.0; otot = 0.0;
            for (int64_t i = 0; i < w; i++) { osum += RING(s, i, R_SIGNED_SIZE); otot += RING(s, i, R_SIZE); }
        }
        F(s, F_OFI_SIGNED) = osum; F(s, F_OFI_TOTAL) = otot;
        o[6] = k >= w ? (otot > 0.0 ? osum / otot : 0.0) : NAN;
        F(s, F_LAST_PRICE) = p; F(s, F_LAST_LOG_PRICE) = log_p;
        I(s, W_LAST_TS) = ts; I(s, W_COUNT) = k + 1;
    }
    return accepted;
}
