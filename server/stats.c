/*
 * stats.c - the statistics behind A/B experiments: Welch's two-sample t-test
 * and confidence interval from summary statistics, Student's t distribution
 * and its inverse, and a running mean and variance.
 *
 * The t distribution's CDF is the regularized incomplete beta function
 * I_x(df/2, 1/2) at x = df / (df + t^2), evaluated by its continued fraction
 * (modified Lentz, on the even contraction). Both x and 1 - x, and their
 * logarithms, are formed from t^2/df without subtracting from 1, so tails
 * keep their relative accuracy and a huge t gives 0 or 1, never NaN.
 * Everything here is a pure function: any thread may call it.
 */
#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>

#include "server_int.h"

#define CF_MAX_ITER 10000           /* t's fractions converge in under 100 steps */
#define CF_EPS (4 * DBL_EPSILON)
#define CF_TINY 1e-300              /* Lentz's stand-in for a zero denominator */
#define QUANTILE_MAX_ITER 300

/* ---- The incomplete beta function -------------------------------------- */

/*
 * ln Gamma(z) - ((z - 1/2) ln z - z + ln(2 pi) / 2), Stirling's series, for
 * z >= 20, where the terms kept leave an error below 1e-17.
 */
static double
stirling_rest(double z)
{
    double r = 1 / (z * z);
    return (1.0 / 12 - r * (1.0 / 360 - r * (1.0 / 1260 - r * (1.0 / 1680 - r / 1188)))) / z;
}

/*
 * ln B(a, b). When the larger argument is big, lgamma(a) - lgamma(a + b)
 * would subtract two numbers near a ln a, leaving an error of about
 * 1e-16 * a ln a in ln B: 1e-9 at df = 1e6. Stirling's formula for the
 * difference keeps it to rounding.
 */
static double
log_beta(double a, double b)
{
    double big = fmax(a, b), small = fmin(a, b);
    if (big < 20)
        return lgamma(a) + lgamma(b) - lgamma(a + b);
    /* ln Gamma(big + small) - ln Gamma(big), without cancellation */
    double rise = (big - 0.5) * log1p(small / big) + small * log(big + small) - small +
                  stirling_rest(big + small) - stirling_rest(big);
    return lgamma(small) - rise;
}

/*
 * The continued fraction of I_x(a, b) divided by its front factor:
 *   F = 1 / (1 + d1 / (1 + d2 / (1 + ...))), with
 *   d(2m+1) = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),  m >= 0,
 *   d(2m)   = m (b - m) x / ((a + 2m - 1)(a + 2m)),            m >= 1.
 * It converges quickly for x < (a + 1) / (a + b + 2).
 *
 * With x near 1 and a large (the t tail at large df) each 1 + d(2m+1) is a
 * difference of nearly equal numbers, and x's own rounding would cost a
 * relative error of about a * 1e-16. So the fraction is evaluated in its even
 * contraction, F = 1 / (e0 + c1 / (e1 + c2 / (e2 + ...))), where
 *   e0 = 1 + d1,  e(m) = (1 + d(2m+1)) + d(2m),  c(m) = -d(2m-1) d(2m),
 * and 1 + d(2m+1) is formed from y = 1 - x without the subtraction.
 */
static double
one_plus_odd(double a, double b, double x, double y, int m)
{
    double den = (a + 2 * m) * (a + 2 * m + 1);
    if (x < 0.5)
        return 1 - (a + m) * (a + b + m) * x / den;
    /*
     * (a + 2m)(a + 2m + 1) - (a + m)(a + b + m)(1 - y), expanded: every term is
     * positive when b <= 1, which holds whenever x >= 1/2 on this side of the mean.
     */
    return (a * (2 * m + 1 - b) + m * (3.0 * m + 2 - b) + (a + m) * (a + b + m) * y) / den;
}

static double
beta_fraction(double a, double b, double x, double y)
{
    /*
     * Modified Lentz on e0 + c1/(e1 + c2/(e2 + ...)): the value after term m is
     * e0 times the products C_j D_j, with C_j = e_j + c_j / C_(j-1) and
     * D_j = 1 / (e_j + c_j D_(j-1)); a zero denominator becomes CF_TINY.
     */
    double f = one_plus_odd(a, b, x, y, 0);
    if (fabs(f) < CF_TINY)
        f = CF_TINY;
    double c = f, d = 0;
    double d_odd = -(a + b) * x / (a + 1);                          /* d1 */
    for (int m = 1; m <= CF_MAX_ITER; m++) {
        double d_even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
        double e = one_plus_odd(a, b, x, y, m) + d_even;
        double cm = -d_odd * d_even;
        d_odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
        d = e + cm * d;
        c = e + cm / c;
        if (fabs(d) < CF_TINY)
            d = CF_TINY;
        if (fabs(c) < CF_TINY)
            c = CF_TINY;
        d = 1 / d;
        double step = c * d;
        f *= step;
        if (fabs(step - 1) < CF_EPS)
            break;
    }
    return 1 / f;
}

static void
exchange(double *p, double *q)
{
    double t = *p;
    *p = *q;
    *q = t;
}

/*
 * I_x(a, b) for a, b > 0, given x, y = 1 - x and their logarithms (the caller
 * forms them without rounding x to 1). Uses the fraction on whichever side of
 * the mean converges: I_x(a, b) = 1 - I_y(b, a).
 */
static double
inc_beta(double a, double b, double x, double y, double lnx, double lny)
{
    if (lnx == -INFINITY)           /* x = 0, even when only its logarithm is known */
        return 0;
    if (lny == -INFINITY)
        return 1;
    bool swap = x > (a + 1) / (a + b + 2);
    if (swap) {
        exchange(&a, &b);
        exchange(&x, &y);
        exchange(&lnx, &lny);
    }
    /* x^a y^b / (a B(a, b)) */
    double front = exp(a * lnx + b * lny - log_beta(a, b)) / a;
    double v = front * beta_fraction(a, b, x, y);
    return swap ? 1 - v : v;
}

/* ---- Student's t distribution ------------------------------------------ */

/* x = df / (df + t^2) and y = 1 - x, with their logarithms. */
struct t_split {
    double x, y, lnx, lny;
};

/*
 * Formed from s = t^2/df, or r = df/t^2 when t^2 > df, so nothing is
 * subtracted from 1 and nothing overflows: x = 1/(1 + s), y = s/(1 + s). When
 * r underflows (t beyond about 1e154) its logarithm still carries the tail,
 * which for df = 1 is about 1/(pi |t|).
 */
static struct t_split
t_split(double t, double df)
{
    if (t * t <= df) {
        double s = t * t / df;
        return (struct t_split){ 1 / (1 + s), s / (1 + s), -log1p(s), log(s) - log1p(s) };
    }
    double r = df / t / t;
    double lnr = r >= DBL_MIN ? log(r) : log(df) - 2 * log(fabs(t));   /* -inf for t = +-inf */
    return (struct t_split){ r / (1 + r), 1 / (1 + r), lnr - log1p(r), -log1p(r) };
}

/* The lower tail P(T <= -|t|) = I_x(df/2, 1/2) / 2, for finite df. */
static double
t_tail(double t, double df)
{
    struct t_split s = t_split(t, df);
    return 0.5 * inc_beta(df / 2, 0.5, s.x, s.y, s.lnx, s.lny);
}

/* The middle P(0 <= T <= |t|) = I_y(1/2, df/2) / 2: relative accuracy for a small t. */
static double
t_middle(double t, double df)
{
    struct t_split s = t_split(t, df);
    return 0.5 * inc_beta(0.5, df / 2, s.y, s.x, s.lny, s.lnx);
}

/* The density: x^((df + 1)/2) / (sqrt(df) B(df/2, 1/2)), for finite df. */
static double
t_pdf(double t, double df)
{
    struct t_split s = t_split(t, df);
    return exp((df + 1) / 2 * s.lnx - 0.5 * log(df) - log_beta(df / 2, 0.5));
}

double
server__t_cdf(double t, double df)
{
    if (isnan(t) || isnan(df) || df <= 0)
        return NAN;
    if (isinf(df))
        return 0.5 * erfc(-t / sqrt(2));
    double tail = t_tail(t, df);
    return t <= 0 ? tail : 1 - tail;
}

/*
 * How far u >= 0 is below the quantile -u of the lower tail p < 1/2: positive
 * below, falling as u grows. Near p = 1/2 it compares the middle mass with
 * 1/2 - p (exact there), so a tiny quantile keeps its relative accuracy.
 */
static double
excess(double u, double p, double df)
{
    if (isinf(df))
        return p < 0.25 ? 0.5 * erfc(u / sqrt(2)) - p : 0.5 - p - 0.5 * erf(u / sqrt(2));
    return p < 0.25 ? t_tail(u, df) - p : 0.5 - p - t_middle(u, df);
}

double
server__t_quantile(double p, double df)
{
    if (!(p > 0 && p < 1) || isnan(df) || df <= 0)
        return NAN;
    if (p == 0.5)
        return 0;
    /* Solve in the lower tail, where p keeps its precision; 1 - p is exact for p > 1/2. */
    if (p > 0.5)
        return -server__t_quantile(1 - p, df);

    /*
     * The quantile is -u. Bracket u: excess(lo) > 0 >= excess(hi), with lo = 0
     * or hi = 2 lo, so u is known within a factor of 2 before Newton starts.
     */
    double lo = 0, hi = 1;
    while (excess(hi, p, df) > 0) {
        lo = hi;
        hi *= 2;
        if (isinf(hi))
            return -INFINITY;       /* p below the smallest tail a double reaches */
    }
    /* Newton from the middle, bisecting whenever a step would leave the bracket. */
    double u = lo + (hi - lo) / 2;
    for (int i = 0; i < QUANTILE_MAX_ITER; i++) {
        double e = excess(u, p, df);
        if (e == 0)
            break;
        if (e > 0)
            lo = u;
        else
            hi = u;
        double pdf = isinf(df) ? exp(-u * u / 2) / sqrt(2 * M_PI) : t_pdf(u, df);
        double next = u + e / pdf;
        if (!(next > lo && next < hi))
            next = lo + (hi - lo) / 2;
        if (fabs(next - u) <= 1e-15 * u)
            break;
        u = next;
    }
    return -u;
}

/* ---- Welch's t-test ---------------------------------------------------- */

int
server__welch(double mean_a, double var_a, long n_a, double mean_b, double var_b, long n_b,
              double conf, struct stats_welch *out)
{
    assert(out != NULL);
    if (!isfinite(mean_a) || !isfinite(mean_b) || !isfinite(var_a) || !isfinite(var_b) ||
        var_a < 0 || var_b < 0 || n_a < 2 || n_b < 2 || !(conf > 0 && conf < 1))
        return -EINVAL;
    double wa = var_a / n_a, wb = var_b / n_b;      /* the squared standard errors */
    double m = fmax(wa, wb);
    if (m == 0)
        return -EINVAL;                 /* no spread: t would be 0/0 or +-inf */
    /*
     * Welch-Satterthwaite: df = (wa + wb)^2 / (wa^2/(n_a - 1) + wb^2/(n_b - 1)),
     * with both divided by m so no square overflows or underflows.
     */
    double ra = wa / m, rb = wb / m;
    double df = (ra + rb) * (ra + rb) / (ra * ra / (n_a - 1.0) + rb * rb / (n_b - 1.0));
    double se = sqrt(m) * sqrt(ra + rb);
    double diff = mean_b - mean_a;
    double t = diff / se;
    /* P(|T| >= |t|) from the lower tail, which keeps its precision when small */
    double p = fmin(1, 2 * server__t_cdf(-fabs(t), df));
    /* (1 - conf) / 2 is exact for conf >= 1/2, so the quantile keeps its precision near 1 */
    double q = -server__t_quantile((1 - conf) / 2, df);
    *out = (struct stats_welch){
        .diff = diff, .t = t, .df = df, .p = p, .lo = diff - q * se, .hi = diff + q * se,
    };
    return 0;
}

/* ---- Running mean and variance ----------------------------------------- */

void
server__acc_add(struct stats_acc *a, double x)
{
    /* Welford: m2 is the sum of squared deviations from the running mean. */
    a->n++;
    double d = x - a->mean;
    a->mean += d / a->n;
    a->m2 += d * (x - a->mean);
}

double
server__acc_var(const struct stats_acc *a)
{
    return a->n < 2 ? 0 : a->m2 / (a->n - 1);
}
