/* The drivers over float32 storage whose products read bf16 operands: the
 * float32 drivers, with W_ih and W_hh packed as bf16 pairs of k and every
 * A operand (x, h_{t-1}, the gate gradients, the states) rounded to bf16
 * as the products read it (kernels.h, ukr_bf16). The maths, the state
 * carried between steps, the reserve and every sum stay float32. Only
 * rnn_bf16.c calls them, on a table with bf16 products. */
#include "problem.h"

#define REAL float
#define PREAL bf16
#define KP 2
#define KERNELS bf16
#define DT(name) name##_bf16
#include "rnn_tmpl.h"

const storage_driver driver_bf16_dot = {sizeof(float), workspace_bytes, reserve_bytes,
                                        forward_call, backward_call,
                                        packed_bytes, pack_call};
