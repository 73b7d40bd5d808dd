/* store-hash.c: being written */
