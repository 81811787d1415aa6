/* The vector layer of simd_tmpl.h for AVX2, float32: 8 lanes. */
#define REAL float
#define SFX(name) name##_f32_avx2
#define DT(name) name##_f32   /* the dtype's types, shared by every ISA */
#define V __m256
#define VMASK __m256i
#define VL 8
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(x) _mm256_set1_ps(x)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_MASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define V_LOAD_M(p, m) _mm256_maskload_ps(p, m)
#define V_STORE_M(p, m, v) _mm256_maskstore_ps(p, m, v)
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_DIV _mm256_div_ps
#define V_FMA _mm256_fmadd_ps
#define V_FNMA _mm256_fnmadd_ps
#define V_MAX _mm256_max_ps
#define V_SIGN _mm256_set1_ps(-0.0f)
#define V_ABS(v) _mm256_andnot_ps(V_SIGN, v)
#define V_NEG(v) _mm256_xor_ps(V_SIGN, v)
#define V_COPYSIGN(mag, s) _mm256_or_ps(mag, _mm256_and_ps(V_SIGN, s))
#define V_SELECT_GE0(x, a, b) _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, V_ZERO(), _CMP_GE_OQ))
#define V_GT0_ONE(y) _mm256_and_ps(_mm256_cmp_ps(y, V_ZERO(), _CMP_GT_OQ), V_SET1(1.0f))
#define V_POW2_SHIFTED(t) _mm256_castsi256_ps(_mm256_slli_epi32( \
    _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127)), 23))
#define SHIFTER 12582912.0f
#define EXP_FLOOR -87.0f
#define POLY_DEG 7
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.42860682030941723e-6f
