/* The drivers over float64 storage. */
#include "problem.h"

#define REAL double
#define KERNELS f64
#define DT(name) name##_f64
#include "rnn_tmpl.h"

const storage_driver driver_f64 = {sizeof(double), workspace_bytes, reserve_bytes,
                                     forward_call, backward_call,
                                     packed_bytes, pack_call};
