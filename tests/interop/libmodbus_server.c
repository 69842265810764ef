/* A Modbus TCP server built on libmodbus (Debian's libmodbus-dev), not on pymodbus: the edge's
 * interoperability test polls it. Serves unit 1 on 127.0.0.1:PORT, one client at a time:
 *   holding 100-101  float32 11.05 (big-endian words)      -> voltage_l1 = 11.05 kV
 *   holding 102-103  float32 11.05 with the words swapped    -> voltage_l2 = 11.05 kV (word_order little)
 *   holding 110      uint16 2317                             -> current_l1 = 231.7 A (scale 0.1)
 *   input   200      int16  -125                             -> temperature = -12.5 degC (scale 0.1)
 *   coil    5        1                                       -> breaker_closed = 1
 * Usage: libmodbus_server PORT
 */
#include <errno.h>
#include <modbus/modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", atoi(argv[1]));
    modbus_mapping_t *map = modbus_mapping_new(16, 0, 300, 300);
    if (ctx == NULL || map == NULL) { fprintf(stderr, "libmodbus: %s\n", modbus_strerror(errno)); return 1; }
    /* 11.05f is 0x4130CCCD. Written word by word: libmodbus 3.1.6's modbus_set_float_abcd swaps
     * the bytes inside each word on little-endian hosts (fixed in 3.1.7). */
    map->tab_registers[100] = 0x4130; map->tab_registers[101] = 0xCCCD;
    map->tab_registers[102] = 0xCCCD; map->tab_registers[103] = 0x4130;
    map->tab_registers[110] = 2317;
    map->tab_input_registers[200] = (uint16_t)(int16_t)-125;
    map->tab_bits[5] = 1;
    int server = modbus_tcp_listen(ctx, 4);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        if (modbus_tcp_accept(ctx, &server) < 0) continue;
        uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
        for (;;) {
            int rc = modbus_receive(ctx, query);
            if (rc > 0) modbus_reply(ctx, query, rc, map);
            else if (rc == -1) break; /* the client went away: accept the next one */
        }
        modbus_close(ctx);
    }
}
