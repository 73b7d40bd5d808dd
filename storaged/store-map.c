/* store-map.c: being written */
