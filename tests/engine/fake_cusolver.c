/* A host stand-in for libcusolver, written from cuSOLVER's documented contract, so that the
 * ctypes binding (convaudit/engine/spectrum/cusolver.py) runs end to end without a GPU.
 *
 * It exports the routines the binding uses with their documented C signatures and semantics:
 * matrices column-major with leading dimension lda, only the LOWER triangle read (so a layout
 * mistake gives wrong eigenvalues), A destroyed on exit, W ascending, info per matrix, workspace
 * sizes from the *_bufferSize queries checked (and written to the end) by the solvers.
 * Pointers are host pointers here (the tests pass CPU tensors).
 *
 * Build flags: -DFAKE_NO_XSYEV leaves out cusolverDnXsyevBatched (cuSOLVER < 11.7.1);
 * -DFAKE_VERSION=N sets what cusolverGetVersion reports.
 * Test hooks: fake_fail(status, info) makes the next solver calls fail; fake_last_stream(),
 * fake_solver_calls() report what the binding did.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAKE_VERSION
#define FAKE_VERSION 11701
#endif

enum { OK = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 3 };
enum { R_32F = 0, R_64F = 1, C_32F = 4, C_64F = 5 };

struct handle { int magic; void *stream; };
struct params { int magic; };
struct jacobi { int magic; int sort; };
#define HANDLE_MAGIC 0x5011
#define PARAMS_MAGIC 0x9a4a
#define JACOBI_MAGIC 0x7ac0

static void *last_stream = (void *)-1;
static int fail_status = 0, fail_info = 0;
static long solver_calls = 0;

int fake_fail(int status, int info) { fail_status = status; fail_info = info; return 0; }
void *fake_last_stream(void) { return last_stream; }
long fake_solver_calls(void) { return solver_calls; }

int cusolverGetVersion(int *version) { *version = FAKE_VERSION; return OK; }

int cusolverDnCreate(void **h) {
    struct handle *p = calloc(1, sizeof *p);
    p->magic = HANDLE_MAGIC;
    *h = p;
    return OK;
}
int cusolverDnDestroy(void *h) { free(h); return OK; }
static int bad_handle(void *h) { return !h || ((struct handle *)h)->magic != HANDLE_MAGIC; }
int cusolverDnSetStream(void *h, void *stream) {
    if (bad_handle(h)) return NOT_INITIALIZED;
    ((struct handle *)h)->stream = stream;
    last_stream = stream;
    return OK;
}
int cusolverDnCreateParams(void **p) {
    struct params *q = calloc(1, sizeof *q);
    q->magic = PARAMS_MAGIC;
    *p = q;
    return OK;
}
int cusolverDnDestroyParams(void *p) { free(p); return OK; }
int cusolverDnCreateSyevjInfo(void **p) {
    struct jacobi *q = calloc(1, sizeof *q);
    q->magic = JACOBI_MAGIC;
    q->sort = 0; /* unsorted unless asked: the binding must ask (or sort itself) */
    *p = q;
    return OK;
}
int cusolverDnDestroySyevjInfo(void *p) { free(p); return OK; }
int cusolverDnXsyevjSetSortEig(void *p, int sort) {
    if (!p || ((struct jacobi *)p)->magic != JACOBI_MAGIC) return INVALID_VALUE;
    ((struct jacobi *)p)->sort = sort;
    return OK;
}

/* Eigenvalues of the Hermitian n×n matrix whose lower triangle is stored column-major at
 * `a` (element size `elt` bytes, complex if `cplx`), via the real symmetric embedding
 * [[X, -Y], [Y, X]] of X + iY (each eigenvalue twice) and cyclic Jacobi. */
static double entry(const void *a, int single, int cplx, int64_t k, int imag) {
    if (!cplx && imag) return 0.0;
    int64_t at = cplx ? 2 * k + imag : k;
    return single ? ((const float *)a)[at] : ((const double *)a)[at];
}

static int by_value(const void *x, const void *y) {
    double d = *(const double *)x - *(const double *)y;
    return (d > 0) - (d < 0);
}

static void eigenvalues(const void *a, int64_t lda, int64_t n, int single, int cplx, double *w) {
    int64_t N = 2 * n;
    double *m = calloc((size_t)(N * N), sizeof *m);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = j; i < n; i++) {
            double x = entry(a, single, cplx, i + lda * j, 0);
            double y = i == j ? 0.0 : entry(a, single, cplx, i + lda * j, 1);
            /* H(i,j) = x + iy and H(j,i) = x - iy */
            m[i * N + j] = m[j * N + i] = x;
            m[(i + n) * N + j + n] = m[(j + n) * N + i + n] = x;
            /* lower-left block Y, upper-right block -Y: Y(i,j) = y, Y(j,i) = -y */
            m[(i + n) * N + j] = m[j * N + i + n] = y;
            m[(j + n) * N + i] = m[i * N + j + n] = -y;
        }
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, total = 0.0;
        for (int64_t p = 0; p < N; p++)
            for (int64_t q = 0; q < N; q++) {
                total += m[p * N + q] * m[p * N + q];
                if (p != q) off += m[p * N + q] * m[p * N + q];
            }
        if (off <= 1e-30 * total || total == 0.0) break;
        for (int64_t p = 0; p < N - 1; p++)
            for (int64_t q = p + 1; q < N; q++) {
                double apq = m[p * N + q];
                if (apq == 0.0) continue;
                double theta = (m[q * N + q] - m[p * N + p]) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int64_t k = 0; k < N; k++) {
                    double mkp = m[k * N + p], mkq = m[k * N + q];
                    m[k * N + p] = c * mkp - s * mkq;
                    m[k * N + q] = s * mkp + c * mkq;
                }
                for (int64_t k = 0; k < N; k++) {
                    double mpk = m[p * N + k], mqk = m[q * N + k];
                    m[p * N + k] = c * mpk - s * mqk;
                    m[q * N + k] = s * mpk + c * mqk;
                }
            }
    }
    double *all = malloc((size_t)N * sizeof *all);
    for (int64_t k = 0; k < N; k++) all[k] = m[k * N + k];
    qsort(all, (size_t)N, sizeof *all, by_value);
    for (int64_t k = 0; k < n; k++) w[k] = all[2 * k];
    free(all);
    free(m);
}

/* Solve `batch` matrices; write W (type w_single) ascending or, unsorted, descending. */
static void solve(void *A, int64_t n, int64_t lda, int64_t batch, int single, int cplx,
                  void *W, int ascending, int *info) {
    double *w = malloc((size_t)(n ? n : 1) * sizeof *w);
    int elt = (single ? 4 : 8) * (cplx ? 2 : 1);
    for (int64_t b = 0; b < batch; b++) {
        char *a = (char *)A + (size_t)(b * lda * n * elt);
        eigenvalues(a, lda, n, single, cplx, w);
        for (int64_t k = 0; k < n; k++) {
            double v = ascending ? w[k] : w[n - 1 - k];
            if (single) ((float *)W)[b * n + k] = (float)v;
            else ((double *)W)[b * n + k] = v;
        }
        for (int64_t j = 0; j < n; j++)  /* "destroyed on exit" */
            for (int64_t i = j; i < n; i++) memset(a + (size_t)((i + lda * j) * elt), 0xff, (size_t)elt);
        info[b] = 0;
    }
    if (fail_info && batch) info[batch - 1] = fail_info;
    free(w);
}

#ifndef FAKE_NO_XSYEV
static int element_size(int type) {
    switch (type) {
        case R_32F: return 4;
        case R_64F: return 8;
        case C_32F: return 8;
        case C_64F: return 16;
        default: return 0;
    }
}

static int64_t xsyev_device_bytes(int64_t n, int type_a, int64_t batch) {
    return batch * (n * n * element_size(type_a) + 64) + 256;
}
#define XSYEV_HOST_BYTES 96

static int xsyev_check(void *h, void *p, int jobz, int uplo, int64_t n, int type_a, int64_t lda,
                       int type_w, int compute, int64_t batch) {
    if (bad_handle(h) || !p || ((struct params *)p)->magic != PARAMS_MAGIC) return NOT_INITIALIZED;
    if (jobz != 0 || uplo != 0 || n < 0 || lda < (n > 1 ? n : 1) || batch < 1) return INVALID_VALUE;
    int ok = (type_a == R_32F && type_w == R_32F && compute == R_32F) ||
             (type_a == R_64F && type_w == R_64F && compute == R_64F) ||
             (type_a == C_32F && type_w == R_32F && compute == C_32F) ||
             (type_a == C_64F && type_w == R_64F && compute == C_64F);
    if (!ok || n * lda * batch > INT32_MAX) return INVALID_VALUE;
    return OK;
}

int cusolverDnXsyevBatched_bufferSize(void *h, void *p, int jobz, int uplo, int64_t n, int type_a,
                                      const void *A, int64_t lda, int type_w, const void *W,
                                      int compute, size_t *on_device, size_t *on_host,
                                      int64_t batch) {
    int status = xsyev_check(h, p, jobz, uplo, n, type_a, lda, type_w, compute, batch);
    if (status) return status;
    if (!A || !W) return INVALID_VALUE;
    *on_device = (size_t)xsyev_device_bytes(n, type_a, batch);
    *on_host = XSYEV_HOST_BYTES;
    return OK;
}

int cusolverDnXsyevBatched(void *h, void *p, int jobz, int uplo, int64_t n, int type_a, void *A,
                           int64_t lda, int type_w, void *W, int compute, void *dev_work,
                           size_t dev_bytes, void *host_work, size_t host_bytes, int *info,
                           int64_t batch) {
    int status = xsyev_check(h, p, jobz, uplo, n, type_a, lda, type_w, compute, batch);
    if (status) return status;
    if (dev_bytes < (size_t)xsyev_device_bytes(n, type_a, batch) || host_bytes < XSYEV_HOST_BYTES ||
        !dev_work || !host_work || !A || !W || !info)
        return INVALID_VALUE;
    if (fail_status) return fail_status;
    memset(dev_work, 0x5a, dev_bytes);
    memset(host_work, 0x5a, host_bytes);
    solver_calls++;
    solve(A, n, lda, batch, type_a == R_32F || type_a == C_32F, type_a == C_32F || type_a == C_64F,
          W, 1, info);
    return OK;
}
#endif

/* The four Jacobi routines: one body per (real type, complex?) */
static int heevj_lwork(int n, int batch) { return batch * (n * n + 16) + 32; }

#define HEEVJ(NAME, SINGLE, CPLX, ELT)                                                           \
    int NAME##_bufferSize(void *h, int jobz, int uplo, int n, const void *A, int lda,            \
                          const void *W, int *lwork, void *params, int batch) {                  \
        if (bad_handle(h) || !params || ((struct jacobi *)params)->magic != JACOBI_MAGIC)        \
            return NOT_INITIALIZED;                                                              \
        if (jobz != 0 || uplo != 0 || n < 0 || lda < (n > 1 ? n : 1) || batch < 1 || !A || !W)  \
            return INVALID_VALUE;                                                                \
        *lwork = heevj_lwork(n, batch);                                                          \
        return OK;                                                                               \
    }                                                                                            \
    int NAME(void *h, int jobz, int uplo, int n, void *A, int lda, void *W, void *work,          \
             int lwork, int *info, void *params, int batch) {                                    \
        if (bad_handle(h) || !params || ((struct jacobi *)params)->magic != JACOBI_MAGIC)        \
            return NOT_INITIALIZED;                                                              \
        if (jobz != 0 || uplo != 0 || n < 0 || lda < (n > 1 ? n : 1) || batch < 1 || !A ||      \
            !W || !work || !info || lwork < heevj_lwork(n, batch))                               \
            return INVALID_VALUE;                                                                \
        if (fail_status) return fail_status;                                                     \
        memset(work, 0x5a, (size_t)lwork * (ELT));                                               \
        solver_calls++;                                                                          \
        solve(A, n, lda, batch, SINGLE, CPLX, W, ((struct jacobi *)params)->sort, info);         \
        return OK;                                                                               \
    }

HEEVJ(cusolverDnSsyevjBatched, 1, 0, 4)
HEEVJ(cusolverDnDsyevjBatched, 0, 0, 8)
HEEVJ(cusolverDnCheevjBatched, 1, 1, 8)
HEEVJ(cusolverDnZheevjBatched, 0, 1, 16)
