/* The vector layer of simd_tmpl.h for AVX-512F, float64: 8 lanes. */
#define REAL double
#define SFX(name) name##_f64_avx512
#define DT(name) name##_f64   /* the dtype's types, shared by every ISA */
#define V __m512d
#define VMASK __mmask8
#define VL 8
#define V_ZERO() _mm512_setzero_pd()
#define V_SET1(x) _mm512_set1_pd(x)
#define V_LOAD(p) _mm512_loadu_pd(p)
#define V_STORE(p, v) _mm512_storeu_pd(p, v)
#define V_MASK(n) ((__mmask8)((1u << (n)) - 1))
#define V_LOAD_M(p, m) _mm512_maskz_loadu_pd(m, p)
#define V_STORE_M(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define V_ADD _mm512_add_pd
#define V_SUB _mm512_sub_pd
#define V_MUL _mm512_mul_pd
#define V_DIV _mm512_div_pd
#define V_FMA _mm512_fmadd_pd
#define V_FNMA _mm512_fnmadd_pd
#define V_MAX _mm512_max_pd
#define V_SIGN _mm512_set1_epi64((long long)0x8000000000000000ull)
#define V_ABS(v) _mm512_castsi512_pd(_mm512_andnot_si512(V_SIGN, _mm512_castpd_si512(v)))
#define V_NEG(v) _mm512_castsi512_pd(_mm512_xor_si512(V_SIGN, _mm512_castpd_si512(v)))
#define V_COPYSIGN(mag, s) _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(mag), \
    _mm512_and_si512(V_SIGN, _mm512_castpd_si512(s))))
#define V_SELECT_GE0(x, a, b) _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, V_ZERO(), _CMP_GE_OQ), b, a)
#define V_GT0_ONE(y) _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(y, V_ZERO(), _CMP_GT_OQ), V_SET1(1.0))
#define V_POW2_SHIFTED(t) _mm512_castsi512_pd(_mm512_slli_epi64( \
    _mm512_add_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(1023)), 52))
#define SHIFTER 6755399441055744.0
#define EXP_FLOOR -708.0
#define POLY_DEG 13
#define LN2_HI 0.6931471803691238
#define LN2_LO 1.9082149292705877e-10
