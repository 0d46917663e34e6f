/*
 * test_stats.c - the statistics of A/B experiments (server/stats.c): Student's
 * t CDF against closed forms (df = 1, 2) and reference values, its tails and
 * extremes; the quantile against known values and in round trips; Welch's
 * test and confidence interval on fixed score sets against scipy; the bad
 * inputs; and the running mean and variance.
 *
 * Reference values come from scipy 1.10.1 (Debian's python3-scipy) and
 * mpmath 1.2.1 at 50 digits (betainc, and findroot on it for quantiles); the
 * test needs neither. scipy's t.cdf and ttest_ind agree with mpmath to 5e-15,
 * but its t.ppf is off by up to 2e-8, so quantiles come from mpmath.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "../server/server_int.h"
#include "check.h"

/* got is within rel (relative) of want. */
#define CHECK_REL(got, want, rel) do { \
        double g_ = (got), w_ = (want); \
        if (!(fabs(g_ - w_) <= (rel) * fabs(w_))) { \
            fprintf(stderr, "%s:%d: CHECK_REL(%s, %s) failed: %.17g != %.17g\n", \
                    __FILE__, __LINE__, #got, #want, g_, w_); \
            check_failed_ = 1; \
        } \
    } while (0)

#define CDF_REL 1e-11               /* it is good to about 2e-13 */
#define QUANTILE_REL 1e-12          /* it is good to about 1e-14 */

/* ---- Helpers ---------------------------------------------------------- */

/* P(T <= t) for df = 1 (Cauchy), 0.5 + atan(t)/pi, without the cancellation for t < 0. */
static double
cauchy_cdf(double t)
{
    return t < 0 ? atan(-1 / t) / M_PI : 0.5 + atan(t) / M_PI;
}

/* df = 2: 0.5 + t / (2 r), r = sqrt(2 + t^2); for t < 0 the same as 1 / (r (r + |t|)). */
static double
t2_cdf(double t)
{
    double r = sqrt(2 + t * t);
    return t < 0 ? 1 / (r * (r - t)) : 0.5 + t / (2 * r);
}

static struct stats_acc
acc_of(const double *x, int n)
{
    struct stats_acc a = STATS_ACC_INIT;
    for (int i = 0; i < n; i++)
        server__acc_add(&a, x[i]);
    return a;
}

/* ---- The t distribution ----------------------------------------------- */

static void
test_cdf_closed_forms(void)
{
    static const double ts[] = { -1e6, -40, -3, -1, -0.01, 0.5, 1, 7, 300 };
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        CHECK_REL(server__t_cdf(ts[i], 1), cauchy_cdf(ts[i]), 1e-12);
        CHECK_REL(server__t_cdf(ts[i], 2), t2_cdf(ts[i]), 1e-12);
    }
    CHECK(server__t_cdf(1, 1) == 0.75);
    /* far tails: beyond t^2 = DBL_MAX that of df = 1 is 1/(pi |t|) to 1e-600 */
    CHECK_REL(server__t_cdf(-1e300, 1), 1 / (M_PI * 1e300), 1e-12);
    CHECK_REL(server__t_cdf(-1e150, 2), t2_cdf(-1e150), 1e-12);
}

static void
test_cdf_reference(void)
{
    /* scipy.stats.t.cdf(t, df); each agrees with mpmath's betainc to 5e-15 */
    static const struct { double t, df, want; } ref[] = {
        { -2.5, 3, 0.04385332350403277 },
        { -2.2281388519649385, 10, 0.02500000000090431 },
        { 1.7, 30, 0.9502610622057416 },
        { 0.25, 7, 0.5951172070760741 },
        { -12, 2.5, 0.0014181075150391613 },
        { -50, 5, 3.023878813300617e-08 },
        { -6, 1e4, 1.0208092364613102e-09 },
        { -4, 1e6, 3.1673517005023895e-05 },
        { -3, 1e9, 0.0013498980648689604 },
    };
    for (size_t i = 0; i < sizeof(ref) / sizeof(ref[0]); i++) {
        CHECK_REL(server__t_cdf(ref[i].t, ref[i].df), ref[i].want, CDF_REL);
        CHECK_REL(server__t_cdf(-ref[i].t, ref[i].df), 1 - ref[i].want, CDF_REL);
    }
    /* t = 0 is the median for every df */
    CHECK(server__t_cdf(0, 1) == 0.5);
    CHECK(server__t_cdf(0, 5) == 0.5);
    CHECK(server__t_cdf(-0.0, 1e6) == 0.5);
    /*
     * Large df tends to the normal: Phi(-3) = 0.5 erfc(3/sqrt(2)) =
     * 0.0013498980316300933 (scipy.stats.norm.cdf(-3)); at df = 1e9 the t tail
     * is 2.4e-8 above it (relative), at df = 1e6 2.4e-5.
     */
    double phi = 0.0013498980316300933;
    CHECK_REL(server__t_cdf(-3, 1e9), phi, 1e-7);
    CHECK_REL(server__t_cdf(-3, 1e6), phi, 1e-4);
    CHECK(fabs(server__t_cdf(-3, 1e6) - phi) > 1e-6 * phi);
    CHECK_REL(server__t_cdf(-3, INFINITY), phi, 1e-14);
}

static void
test_cdf_extremes(void)
{
    /* tails far below DBL_MIN are 0, never NaN (scipy: 0.0 for both) */
    CHECK(server__t_cdf(-1e300, 3) == 0);
    CHECK(server__t_cdf(1e300, 3) == 1);
    CHECK(server__t_cdf(-50, 1e6) == 0);
    CHECK(server__t_cdf(50, 1e6) == 1);
    CHECK(server__t_cdf(-INFINITY, 4) == 0);
    CHECK(server__t_cdf(INFINITY, 4) == 1);
    CHECK(isnan(server__t_cdf(NAN, 4)));
    CHECK(isnan(server__t_cdf(1, NAN)));
    CHECK(isnan(server__t_cdf(1, 0)));
    CHECK(isnan(server__t_cdf(1, -2)));
    /* in [0, 1], never decreasing, and symmetric, over the whole range */
    static const double dfs[] = { 1, 1.5, 3, 30, 1e3, 1e6 };
    for (size_t i = 0; i < sizeof(dfs) / sizeof(dfs[0]); i++) {
        double prev = 0;
        for (double t = -60; t <= 60; t += 0.125) {
            double c = server__t_cdf(t, dfs[i]);
            CHECK(c >= prev && c <= 1);
            CHECK(fabs(c + server__t_cdf(-t, dfs[i]) - 1) <= 2 * DBL_EPSILON);
            prev = c;
        }
    }
}

static void
test_quantile_known(void)
{
    /*
     * The root of mpmath's CDF minus p; scipy.stats.t.ppf's value, for the
     * record, and its relative error.
     */
    static const struct { double p, df, want; } ref[] = {
        { 0.975, 10, 2.2281388519862744 },              /* 2.2281388519649385, 1e-11 */
        { 0.999, 30, 3.385184866829305 },               /* 3.385184866818216, 3e-12 */
        { 0.3, 2.5, -0.5973077382523175 },              /* -0.5973077372806072, 2e-9 */
        { 1e-6, 1.5, -5219.469324706946 },              /* -5219.469324709013, 4e-13 */
        { 1e-10, 5, -156.8255927088943 },               /* -156.8255928081382, 6e-10 */
        { 0.9, 1e6, 1.2815524121299386 },               /* the same */
        { 0.5 - 1e-10, 7, -2.5974604905604774e-10 },    /* -2.597460551014624e-10, 2e-8 */
    };
    for (size_t i = 0; i < sizeof(ref) / sizeof(ref[0]); i++)
        CHECK_REL(server__t_quantile(ref[i].p, ref[i].df), ref[i].want, QUANTILE_REL);
    /* the brief's t(0.975, 10), which is scipy's, to its own 1e-11 */
    CHECK_REL(server__t_quantile(0.975, 10), 2.2281388519649385, 1e-10);
    CHECK_REL(server__t_quantile(0.025, 10), -2.2281388519649385, 1e-10);
    /*
     * Closed forms: df = 1, tan(pi (p - 1/2)), written as -1 / tan(pi p) so
     * p - 1/2 is not rounded next to the pole; df = 2, (2p - 1) / sqrt(2p(1 - p)).
     */
    static const double ps[] = { 1e-9, 0.01, 0.25, 0.4, 0.7, 0.995 };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double p = ps[i];
        double cauchy = p < 0.5 ? -1 / tan(M_PI * p) : 1 / tan(M_PI * (1 - p));
        CHECK_REL(server__t_quantile(p, 1), cauchy, 1e-12);
        CHECK_REL(server__t_quantile(p, 2), (2 * p - 1) / sqrt(2 * p * (1 - p)), 1e-12);
    }
    CHECK(server__t_quantile(0.5, 3) == 0);
    /* scipy.stats.norm.ppf(0.975); mpmath: 1.95996398454005421 */
    CHECK_REL(server__t_quantile(0.975, INFINITY), 1.959963984540054, 1e-14);
    CHECK(isnan(server__t_quantile(0, 3)));
    CHECK(isnan(server__t_quantile(1, 3)));
    CHECK(isnan(server__t_quantile(-0.1, 3)));
    CHECK(isnan(server__t_quantile(NAN, 3)));
    CHECK(isnan(server__t_quantile(0.3, 0)));
    CHECK(isnan(server__t_quantile(0.3, NAN)));
}

static void
test_quantile_round_trip(void)
{
    static const double ps[] = { 1e-300, 1e-12, 1e-6, 0.01, 0.025, 0.2, 0.4, 0.5 - 1e-9 };
    static const double dfs[] = { 1, 2, 3.5, 10, 100, 1e4, 1e6, 1e9 };
    for (size_t j = 0; j < sizeof(dfs) / sizeof(dfs[0]); j++) {
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
            double p = ps[i], df = dfs[j];
            double q = server__t_quantile(p, df);
            CHECK(isfinite(q) && q < 0);
            CHECK_REL(server__t_cdf(q, df), p, 1e-9);
            /* the upper quantile mirrors it, where 1 - p keeps p's digits */
            if (p >= 0.01 && p < 0.25)
                CHECK_REL(server__t_quantile(1 - p, df), -q, 1e-12);
        }
    }
}

/* ---- Welch's t-test --------------------------------------------------- */

/* Feedback scores of a control (a) and a variant (b). */
static const double small_a[] = { 0.8, 0.6, 0.9, 0.7, 0.75, 0.65, 0.85, 0.5 };
static const double small_b[] = { 0.9, 0.95, 0.7, 0.85, 1.0, 0.8, 0.9, 0.75, 0.95, 0.88 };

static void
test_welch_small(void)
{
    struct stats_acc a = acc_of(small_a, 8), b = acc_of(small_b, 10);
    /* numpy mean() and var(ddof=1) */
    CHECK_REL(a.mean, 0.71875, 1e-15);
    CHECK_REL(server__acc_var(&a), 0.017812500000000002, 1e-14);
    CHECK_REL(b.mean, 0.868, 1e-15);
    CHECK_REL(server__acc_var(&b), 0.008906666666666667, 1e-14);

    struct stats_welch w;
    CHECK_EQ(server__welch(a.mean, server__acc_var(&a), a.n, b.mean, server__acc_var(&b), b.n,
                           0.95, &w), 0);
    /*
     * scipy.stats.ttest_ind(b, a, equal_var=False): statistic 2.6731909012748636,
     * pvalue 0.020043086913790982 (mpmath: 0.02004308691379102); df from the
     * Welch-Satterthwaite formula on numpy's variances. The interval is
     * diff -+ q sqrt(va/na + vb/nb) with q = t(0.975, df) = 2.174823355448138
     * from mpmath (scipy's t.ppf: 2.174823355444886, giving 0.027824932435484173
     * and 0.2706750675645158).
     */
    CHECK_REL(w.diff, 0.14925, 1e-13);
    CHECK_REL(w.t, 2.6731909012748636, 1e-12);
    CHECK_REL(w.df, 12.201780865141558, 1e-12);
    CHECK_REL(w.p, 0.020043086913790982, 1e-9);
    CHECK_REL(w.lo, 0.02782493243530262, 1e-12);
    CHECK_REL(w.hi, 0.2706750675646974, 1e-12);
    double se = sqrt(server__acc_var(&a) / 8 + server__acc_var(&b) / 10);
    CHECK_REL(w.hi - w.diff, server__t_quantile(0.975, w.df) * se, 1e-12);
    CHECK_REL(w.diff - w.lo, w.hi - w.diff, 1e-12);

    /* the other way round: the same test, mirrored */
    struct stats_welch r;
    CHECK_EQ(server__welch(b.mean, server__acc_var(&b), b.n, a.mean, server__acc_var(&a), a.n,
                           0.95, &r), 0);
    CHECK(r.diff == -w.diff && r.t == -w.t && r.p == w.p && r.lo == -w.hi && r.hi == -w.lo);
}

/* One arm with no spread (all 0.5) is fine: df is then n_b - 1. */
static void
test_welch_one_variance_zero(void)
{
    struct stats_acc b = acc_of(small_b, 10);
    struct stats_welch w;
    CHECK_EQ(server__welch(0.5, 0, 6, b.mean, server__acc_var(&b), b.n, 0.95, &w), 0);
    /*
     * ttest_ind(small_b, [0.5] * 6, equal_var=False); the interval with
     * t(0.975, 9) = 2.262157162798205 (mpmath; scipy's t.ppf: 2.2621571627409915)
     */
    CHECK_REL(w.t, 12.33077062440206, 1e-12);
    CHECK_REL(w.df, 9, 1e-14);
    CHECK_REL(w.p, 6.105883229782065e-07, 1e-9);
    CHECK_REL(w.lo, 0.3004880933019458, 1e-12);
    CHECK_REL(w.hi, 0.4355119066980542, 1e-12);
}

static void
test_welch_equal_means(void)
{
    struct stats_welch w;
    CHECK_EQ(server__welch(0.7, 0.02, 40, 0.7, 0.05, 25, 0.9, &w), 0);
    CHECK(w.diff == 0 && w.t == 0);
    CHECK(w.p == 1);
    CHECK(w.lo < 0 && w.lo == -w.hi);
}

static void
test_welch_einval(void)
{
    struct stats_welch w = { .p = 42 };
    CHECK_EQ(server__welch(0.5, 0.1, 1, 0.6, 0.1, 10, 0.95, &w), -EINVAL);    /* n_a < 2 */
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 1, 0.95, &w), -EINVAL);    /* n_b < 2 */
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 0, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, -3, 0.6, 0.1, 10, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 10, 0, &w), -EINVAL);      /* conf */
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 10, 1, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 10, 95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, 0.1, 10, NAN, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0, 10, 0.6, 0, 10, 0.95, &w), -EINVAL);       /* no spread */
    CHECK_EQ(server__welch(NAN, 0.1, 10, 0.6, 0.1, 10, 0.95, &w), -EINVAL);   /* NaN */
    CHECK_EQ(server__welch(0.5, NAN, 10, 0.6, 0.1, 10, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, 10, NAN, 0.1, 10, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, 0.1, 10, 0.6, NAN, 10, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(INFINITY, 0.1, 10, 0.6, 0.1, 10, 0.95, &w), -EINVAL);
    CHECK_EQ(server__welch(0.5, -0.1, 10, 0.6, 0.1, 10, 0.95, &w), -EINVAL);  /* negative */
    CHECK(w.p == 42);               /* untouched on error */
}

/*
 * 3000 and 4000 scores from integer formulas that Python reproduces bit for
 * bit: a_i = ((37 i) mod 101) / 100, b_i = ((53 i + 7) mod 103) / 102 * 0.9 + 0.08.
 */
static void
test_welch_large(void)
{
    struct stats_acc a = STATS_ACC_INIT, b = STATS_ACC_INIT;
    for (long i = 0; i < 3000; i++)
        server__acc_add(&a, (double)((i * 37) % 101) / 100.0);
    for (long i = 0; i < 4000; i++)
        server__acc_add(&b, (double)((i * 53 + 7) % 103) / 102.0 * 0.9 + 0.08);
    CHECK_EQ(a.n, 3000);
    CHECK_REL(a.mean, 0.5000666666666667, 1e-14);            /* numpy */
    CHECK_REL(server__acc_var(&a), 0.0850312726464377, 1e-12);
    CHECK_REL(b.mean, 0.5297705882352941, 1e-14);
    CHECK_REL(server__acc_var(&b), 0.06881070540991648, 1e-12);

    /*
     * ttest_ind(B, A, equal_var=False): statistic 4.401357037561592, pvalue
     * 1.0941964779656151e-05 (mpmath: 1.0941964779656184e-05); the intervals
     * use t(0.975, df) = 1.9603550188592551 and t(0.995, df) =
     * 2.5766398058326487 (mpmath; scipy's t.ppf agrees to 1e-16).
     */
    struct stats_welch w;
    double va = server__acc_var(&a), vb = server__acc_var(&b);
    CHECK_EQ(server__welch(a.mean, va, a.n, b.mean, vb, b.n, 0.95, &w), 0);
    CHECK_REL(w.diff, 0.029703921568627445, 1e-12);
    CHECK_REL(w.t, 4.401357037561592, 1e-11);
    CHECK_REL(w.df, 6067.847090979854, 1e-11);
    CHECK_REL(w.p, 1.0941964779656151e-05, 1e-9);
    CHECK_REL(w.lo, 0.016473858379043357, 1e-12);
    CHECK_REL(w.hi, 0.04293398475821154, 1e-12);
    CHECK_EQ(server__welch(a.mean, va, a.n, b.mean, vb, b.n, 0.99, &w), 0);
    CHECK_REL(w.lo, 0.012314669560692515, 1e-12);
    CHECK_REL(w.hi, 0.047093173576562376, 1e-12);
}

/* ---- Running mean and variance ---------------------------------------- */

static void
test_acc(void)
{
    struct stats_acc a = STATS_ACC_INIT;
    CHECK(server__acc_var(&a) == 0);
    server__acc_add(&a, 0.25);
    CHECK_EQ(a.n, 1);
    CHECK(a.mean == 0.25 && server__acc_var(&a) == 0);
    static const double x[] = { 2, 4, 4, 4, 5, 5, 7, 9 };
    a = acc_of(x, 8);
    CHECK(a.mean == 5);
    CHECK_REL(server__acc_var(&a), 32.0 / 7, 1e-15);
    /* a large offset costs the naive sum of squares every digit; Welford keeps them */
    static const double far[] = { 1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16 };
    a = acc_of(far, 4);
    CHECK(a.mean == 1e9 + 10);
    CHECK_REL(server__acc_var(&a), 30, 1e-12);
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        { "cdf_closed_forms", test_cdf_closed_forms },
        { "cdf_reference", test_cdf_reference },
        { "cdf_extremes", test_cdf_extremes },
        { "quantile_known", test_quantile_known },
        { "quantile_round_trip", test_quantile_round_trip },
        { "welch_small", test_welch_small },
        { "welch_one_variance_zero", test_welch_one_variance_zero },
        { "welch_equal_means", test_welch_equal_means },
        { "welch_einval", test_welch_einval },
        { "welch_large", test_welch_large },
        { "acc", test_acc },
        { NULL, NULL },
    };
    return check_main(tests, argc, argv);
}
