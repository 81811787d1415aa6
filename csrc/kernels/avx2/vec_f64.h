/* The vector layer of simd_tmpl.h for AVX2, float64: 4 lanes. */
#define REAL double
#define SFX(name) name##_f64_avx2
#define DT(name) name##_f64   /* the dtype's types, shared by every ISA */
#define V __m256d
#define VMASK __m256i
#define VL 4
#define V_ZERO() _mm256_setzero_pd()
#define V_SET1(x) _mm256_set1_pd(x)
#define V_LOAD(p) _mm256_loadu_pd(p)
#define V_STORE(p, v) _mm256_storeu_pd(p, v)
#define V_MASK(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
#define V_LOAD_M(p, m) _mm256_maskload_pd(p, m)
#define V_STORE_M(p, m, v) _mm256_maskstore_pd(p, m, v)
#define V_ADD _mm256_add_pd
#define V_SUB _mm256_sub_pd
#define V_MUL _mm256_mul_pd
#define V_DIV _mm256_div_pd
#define V_FMA _mm256_fmadd_pd
#define V_FNMA _mm256_fnmadd_pd
#define V_MAX _mm256_max_pd
#define V_SIGN _mm256_set1_pd(-0.0)
#define V_ABS(v) _mm256_andnot_pd(V_SIGN, v)
#define V_NEG(v) _mm256_xor_pd(V_SIGN, v)
#define V_COPYSIGN(mag, s) _mm256_or_pd(mag, _mm256_and_pd(V_SIGN, s))
#define V_SELECT_GE0(x, a, b) _mm256_blendv_pd(b, a, _mm256_cmp_pd(x, V_ZERO(), _CMP_GE_OQ))
#define V_GT0_ONE(y) _mm256_and_pd(_mm256_cmp_pd(y, V_ZERO(), _CMP_GT_OQ), V_SET1(1.0))
#define V_POW2_SHIFTED(t) _mm256_castsi256_pd(_mm256_slli_epi64( \
    _mm256_add_epi64(_mm256_castpd_si256(t), _mm256_set1_epi64x(1023)), 52))
#define SHIFTER 6755399441055744.0
#define EXP_FLOOR -708.0
#define POLY_DEG 13
#define LN2_HI 0.6931471803691238
#define LN2_LO 1.9082149292705877e-10
