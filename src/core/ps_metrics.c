/* ps_metrics: the process-wide counters (see ps_metrics.h). */
#include "core/ps_metrics.h"

ps_metrics_t ps_metrics;
