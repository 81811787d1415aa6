/* Every SIMD micro-kernel of one (ISA, dtype): the vector maths, the product
 * kernel and the cell kernels. Included by kernels/<isa>/ukr_<isa>.c once per
 * dtype, after that dtype's vector layer. */
#include "vmath_tmpl.h"
#include "simd_tmpl.h"
#include "cells_tmpl.h"

