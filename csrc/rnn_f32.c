/* The drivers over float32 storage. */
#include "problem.h"

#define REAL float
#define KERNELS f32
#define DT(name) name##_f32
#include "rnn_tmpl.h"

const storage_driver driver_f32 = {sizeof(float), workspace_bytes, reserve_bytes,
                                     forward_call, backward_call,
                                     packed_bytes, pack_call};
