/* The vector layer of simd_tmpl.h for AVX-512F, float32: 16 lanes. Only
 * AVX512F instructions: bitwise float operations go through the integer
 * domain (the float forms need AVX512DQ). */
#define REAL float
#define SFX(name) name##_f32_avx512
#define DT(name) name##_f32   /* the dtype's types, shared by every ISA */
#define V __m512
#define VMASK __mmask16
#define VL 16
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(x) _mm512_set1_ps(x)
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_MASK(n) ((__mmask16)((1u << (n)) - 1))
#define V_LOAD_M(p, m) _mm512_maskz_loadu_ps(m, p)
#define V_STORE_M(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_DIV _mm512_div_ps
#define V_FMA _mm512_fmadd_ps
#define V_FNMA _mm512_fnmadd_ps
#define V_MAX _mm512_max_ps
#define V_SIGN _mm512_set1_epi32((int)0x80000000u)
#define V_ABS(v) _mm512_castsi512_ps(_mm512_andnot_si512(V_SIGN, _mm512_castps_si512(v)))
#define V_NEG(v) _mm512_castsi512_ps(_mm512_xor_si512(V_SIGN, _mm512_castps_si512(v)))
#define V_COPYSIGN(mag, s) _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), \
    _mm512_and_si512(V_SIGN, _mm512_castps_si512(s))))
#define V_SELECT_GE0(x, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, V_ZERO(), _CMP_GE_OQ), b, a)
#define V_GT0_ONE(y) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, V_ZERO(), _CMP_GT_OQ), V_SET1(1.0f))
#define V_POW2_SHIFTED(t) _mm512_castsi512_ps(_mm512_slli_epi32( \
    _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127)), 23))
#define SHIFTER 12582912.0f
#define EXP_FLOOR -87.0f
#define POLY_DEG 7
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.42860682030941723e-6f
