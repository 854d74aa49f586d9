# fish completion for stigmer(1); installed as
# share/fish/vendor_completions.d/stigmer.fish.

set -l commands agent-runner config daemon executions help run server version
function __stigmer_sub --description 'true when the command is $argv[1] and the subcommand one of $argv[2..]'
    set -l tokens (commandline -opc)
    set -l words
    set -l skip 0
    for t in $tokens[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case --home --log-level --set
                set skip 1
            case '-*'
            case '*'
                set -a words $t
        end
    end
    test (count $words) -ge 1; or return 1
    test "$words[1]" = "$argv[1]"; or return 1
    if test (count $argv) -eq 1
        test (count $words) -eq 1
        return
    end
    test (count $words) -ge 2; and contains -- $words[2] $argv[2..-1]
end

complete -c stigmer -f
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -l home -r -a '(__fish_complete_directories)' -d 'STIGMER_HOME'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -l log-level -x -a 'error warn info debug' -d 'log level'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -l set -x -d 'SECTION.KEY=VALUE'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'the usage text'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -s V -l version -d 'same as stigmer version'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -l list -d 'list the applets'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -l install -r -a '(__fish_complete_directories)' -d 'create the applet links in DIR'

complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a agent-runner -d 'the agent-runner binary'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a config -d 'the effective configuration'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a daemon -d 'the stack in the background'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a executions -d 'workflow executions'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a help -d 'the usage text'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a run -d 'run a workflow file'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a server -d 'aliases of daemon start|stop|status|logs'
complete -c stigmer -n "not __fish_seen_subcommand_from $commands" -a version -d 'versions of stigmer and its libraries'

# agent-runner
complete -c stigmer -n '__stigmer_sub agent-runner' -a 'status path extract install reset fetch'
complete -c stigmer -n '__stigmer_sub agent-runner status' -l json -d 'as JSON'
complete -c stigmer -n '__stigmer_sub agent-runner install' -F
complete -c stigmer -n '__stigmer_sub agent-runner install' -l version -x -d 'version'
complete -c stigmer -n '__stigmer_sub agent-runner fetch' -l attempts -x -d 'how many tries, 0 for ever'
# config
complete -c stigmer -n '__stigmer_sub config' -a show
complete -c stigmer -n '__stigmer_sub config show' -l json -d 'as JSON'
# daemon, server
complete -c stigmer -n '__stigmer_sub daemon' -a 'start stop restart status logs run install-service uninstall-service'
complete -c stigmer -n '__stigmer_sub server' -a 'start stop restart status logs'
complete -c stigmer -n '__stigmer_sub daemon restart; or __stigmer_sub server restart' -a 'all server workflow-runner agent-runner'
complete -c stigmer -n '__stigmer_sub daemon status; or __stigmer_sub server status' -l json -d 'as JSON'
complete -c stigmer -n '__stigmer_sub daemon logs; or __stigmer_sub server logs' -a 'server workflow-runner agent-runner supervisor'
complete -c stigmer -n '__stigmer_sub daemon logs; or __stigmer_sub server logs' -s f -l follow -d 'keep printing new lines'
complete -c stigmer -n '__stigmer_sub daemon logs; or __stigmer_sub server logs' -s n -l tail -x -d 'the last N lines of each component'
complete -c stigmer -n '__stigmer_sub daemon logs; or __stigmer_sub server logs' -l since -x -d 'lines captured at or after TIME'
complete -c stigmer -n '__stigmer_sub daemon logs; or __stigmer_sub server logs' -l no-color -d 'no colours'
complete -c stigmer -n '__stigmer_sub daemon run' -l no-echo -d "do not echo the components' lines"
complete -c stigmer -n '__stigmer_sub daemon install-service uninstall-service' -l system -d 'the system-wide systemd service'
complete -c stigmer -n '__stigmer_sub daemon install-service uninstall-service' -l dry-run -d 'print the file and the commands only'
# executions
complete -c stigmer -n '__stigmer_sub executions' -a 'list show cancel logs'
complete -c stigmer -n '__stigmer_sub executions list' -l state -x -a 'pending running succeeded failed cancelled' -d 'only this state'
complete -c stigmer -n '__stigmer_sub executions list' -l limit -x -d 'at most N'
complete -c stigmer -n '__stigmer_sub executions list show' -l json -d 'as JSON'
complete -c stigmer -n '__stigmer_sub executions logs' -s f -l follow -d 'until the execution finishes'
# run, version
complete -c stigmer -n '__stigmer_sub run' -F
complete -c stigmer -n '__stigmer_sub run' -l input -x -d 'NAME=VALUE'
complete -c stigmer -n '__stigmer_sub run' -l detach -d 'print the execution id and exit'
complete -c stigmer -n '__stigmer_sub version' -l json -d 'as JSON'
