# Mirrors csrc/include/fusedrnn.h; see it for every buffer's shape and role.
from libc.stdint cimport int64_t, uint8_t


cdef extern from "fusedrnn.h" nogil:
    ctypedef enum fusedrnn_status:
        FUSEDRNN_OK
        FUSEDRNN_EINVAL
        FUSEDRNN_EWORKSPACE
        FUSEDRNN_EISA
        FUSEDRNN_EOVERFLOW
        FUSEDRNN_ERESERVE
        FUSEDRNN_EPACKED

    ctypedef enum fusedrnn_dtype:
        FUSEDRNN_F32
        FUSEDRNN_F64
        FUSEDRNN_BF16
        FUSEDRNN_F32_BF16

    ctypedef enum fusedrnn_cell:
        FUSEDRNN_RNN
        FUSEDRNN_LSTM
        FUSEDRNN_GRU
        FUSEDRNN_GRU_RESET_FIRST

    ctypedef enum fusedrnn_act:
        FUSEDRNN_TANH
        FUSEDRNN_RELU
        FUSEDRNN_SIGMOID

    ctypedef struct fusedrnn_problem:
        fusedrnn_cell cell
        fusedrnn_dtype dtype
        int64_t T, B, D, H
        fusedrnn_act act
        int reverse
        int batch_first
        int threads
        int training

    ctypedef struct fusedrnn_inputs:
        const void *x
        const void *h0
        const void *c0
        const void *w_ih
        const void *w_hh
        const void *b_ih
        const void *b_hh
        const int64_t *lengths
        const uint8_t *resets
        const void *packed

    ctypedef struct fusedrnn_outputs:
        void *y
        void *h_n
        void *c_n
        void *reserve

    ctypedef struct fusedrnn_grad_inputs:
        const void *y
        const void *reserve
        const void *dy
        const void *dh_n
        const void *dc_n

    ctypedef struct fusedrnn_grads:
        void *dx
        void *dh0
        void *dc0
        void *dw_ih
        void *dw_hh
        void *db_ih
        void *db_hh

    int fusedrnn_gates(fusedrnn_cell cell)

    ctypedef struct fusedrnn_cell_info:
        const char *name
        int gates
        int has_c
        int has_act
        int reserve_rows
        int bias_grads_differ

    int FUSEDRNN_CELL_COUNT
    const fusedrnn_cell_info *fusedrnn_cell_describe(fusedrnn_cell cell)
    size_t fusedrnn_forward_workspace(const fusedrnn_problem *p)
    size_t fusedrnn_backward_workspace(const fusedrnn_problem *p)
    size_t fusedrnn_reserve_size(const fusedrnn_problem *p)

    fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p, const fusedrnn_inputs *inputs,
                                     const fusedrnn_outputs *out,
                                     void *workspace, size_t workspace_bytes)
    fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p, const fusedrnn_inputs *inputs,
                                      const fusedrnn_grad_inputs *gin,
                                      const fusedrnn_grads *grads,
                                      void *workspace, size_t workspace_bytes)

    size_t fusedrnn_packed_size(const fusedrnn_problem *p)
    fusedrnn_status fusedrnn_pack(const fusedrnn_problem *p, const void *w_ih, const void *w_hh,
                                  const void *b_ih, const void *b_hh, void *packed, size_t bytes)

    fusedrnn_status fusedrnn_set_isa(const char *name)
    const char *fusedrnn_get_isa()
    int fusedrnn_isa_supported(const char *name)

    fusedrnn_status fusedrnn_activation(fusedrnn_dtype dtype, fusedrnn_act act, int derivative,
                                        int64_t n, const void *z, const void *y, void *out)
    int fusedrnn_share_openmp(const char *library)
    void fusedrnn_hold_worker(int worker, int microseconds)

    double FUSEDRNN_PEAK_MAX_SECONDS
    double fusedrnn_peak_gflops(fusedrnn_dtype dtype, double seconds)
    int fusedrnn_bf16_dot_supported()
