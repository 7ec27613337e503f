/* agn_infer.c: the network part of agn_device_run (steps 1-4 of agn_device.c): image -> int16 local
 * logits at AGN_OFF_LOGITS and channel-major centroid indices at AGN_OFF_INDICES of the arena.
 * Two halves, so that the payload can leave before the local predictor runs (agn_device_features,
 * agn_device_local): the first leaves the indices and the local predictor's input in the arena, the
 * second reads only that input. Internal (declared in agn_model.h); the host tests call
 * agn_device_infer to compare logits and indices with the Python reference separately from the coder. */
#include "agn_model.h"

#if AGN_GENERATOR_VERSION_NUM != @GENERATOR_VERSION_NUM@
#error "agn_infer.c and agilenn_device.h come from different agilenn-firmware versions: generate again"
#endif

static void agn_run_layer(const agn_layer *layer, uint8_t *arena, int16_t *scratch)
{
    const int8_t *in = (const int8_t *)(arena + layer->in_offset);
    int8_t *out = (int8_t *)(arena + layer->out_offset);
    switch (layer->kind) {
    case AGN_KIND_CONV:
        agn_conv_s8(in, layer->in_dims, &layer->p, out, layer->out_dims, scratch);
        break;
    case AGN_KIND_DWCONV:
        agn_dwconv_s8(in, layer->in_dims, &layer->p, out, layer->out_dims, scratch);
        break;
    case AGN_KIND_CONV1X1:
        agn_conv1x1_s8(in, layer->in_dims, &layer->p, out, layer->out_dims, scratch);
        break;
    default: /* AGN_KIND_DENSE: int16 outputs (the logits) */
        agn_dense_s8_s16(in, layer->in_dims, &layer->p, (int16_t *)(void *)out, layer->out_dims, scratch);
        break;
    }
}

/* Steps 1-3: the extractor, the centroid indices (AGN_OFF_INDICES) and the local channels, the
 * local predictor's input (AGN_OFF_LOCAL_IN). The arena plan keeps both alive until the last layer. */
void agn_device_infer_features(const uint8_t *image, uint8_t *arena)
{
    int8_t *input = (int8_t *)(arena + AGN_OFF_INPUT);
    int16_t *scratch = (int16_t *)(void *)(arena + AGN_OFF_SCRATCH);
    const agn_layer *features = &agn_model_layers[AGN_EXTRACTOR_LAYERS - 1];
    uint32_t i;
    for (i = 0; i < (uint32_t)AGN_IMAGE_BYTES; i++) {
        input[i] = (int8_t)((int32_t)image[i] - 128);
    }
    for (i = 0; i < (uint32_t)AGN_EXTRACTOR_LAYERS; i++) {
        agn_run_layer(&agn_model_layers[i], arena, scratch);
    }
    agn_centroid_index_s8((const int8_t *)(arena + features->out_offset), features->out_dims, AGN_SPLIT_K,
                          AGN_REMOTE_CHANNELS, agn_model_centroid_index, arena + AGN_OFF_INDICES);
    {
        const agn_dims local_dims = {1, AGN_FEATURE_HEIGHT, AGN_FEATURE_WIDTH, AGN_SPLIT_K};
        agn_slice_channels_s8((const int8_t *)(arena + features->out_offset), features->out_dims, 0,
                              (int8_t *)(arena + AGN_OFF_LOCAL_IN), local_dims);
    }
}

/* Step 4: the local predictor, from AGN_OFF_LOCAL_IN to the int16 logits at AGN_OFF_LOGITS. Its
 * layers write nowhere the indices lie (the plan keeps them alive to the end). */
void agn_device_infer_local(uint8_t *arena)
{
    int16_t *scratch = (int16_t *)(void *)(arena + AGN_OFF_SCRATCH);
    uint32_t i;
    for (i = AGN_EXTRACTOR_LAYERS; i < (uint32_t)AGN_MODEL_LAYERS; i++) {
        agn_run_layer(&agn_model_layers[i], arena, scratch);
    }
}

/* Steps 1-4: the logits and the centroid indices, left in the arena (AGN_OFF_LOGITS, AGN_OFF_INDICES). */
void agn_device_infer(const uint8_t *image, uint8_t *arena)
{
    agn_device_infer_features(image, arena);
    agn_device_infer_local(arena);
}
