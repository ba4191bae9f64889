#include "domain/planner.h"
