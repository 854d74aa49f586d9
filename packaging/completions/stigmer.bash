# bash completion for stigmer(1)                           -*- shell-script -*-
# Installed as share/bash-completion/completions/stigmer.

_stigmer() {
	local cur prev words cword
	_init_completion 2>/dev/null || {
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	}
	local globals="--home --log-level --set --help --version --list --install"
	local commands="agent-runner config daemon executions help run server version"
	local components="server workflow-runner agent-runner"

	case $prev in
	--home | --install | -s)
		COMPREPLY=($(compgen -d -- "$cur"))
		return ;;
	--log-level)
		COMPREPLY=($(compgen -W "error warn info debug" -- "$cur"))
		return ;;
	--set | --version | --since | -n | --tail | --input | --limit)
		return ;; # free text
	--state)
		COMPREPLY=($(compgen -W "pending running succeeded failed cancelled" -- "$cur"))
		return ;;
	esac

	# Find the command and its subcommand, skipping global options.
	local i=1 cmd="" sub=""
	while [ $i -lt $cword ]; do
		case ${words[i]} in
		--home | --log-level | --set) i=$((i + 1)) ;;
		-*) ;;
		*) if [ -z "$cmd" ]; then cmd=${words[i]}; elif [ -z "$sub" ]; then sub=${words[i]}; fi ;;
		esac
		i=$((i + 1))
	done

	case $cmd in
	"")
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$globals" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi ;;
	agent-runner)
		case $sub in
		"") COMPREPLY=($(compgen -W "status path extract install reset fetch --help" -- "$cur")) ;;
		status) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
		install)
			if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "--version" -- "$cur"))
			else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
		fetch) COMPREPLY=($(compgen -W "--attempts" -- "$cur")) ;;
		esac ;;
	config)
		case $sub in
		"") COMPREPLY=($(compgen -W "show --help" -- "$cur")) ;;
		show) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
		esac ;;
	daemon | server)
		case $sub in
		"")
			if [ "$cmd" = daemon ]; then
				COMPREPLY=($(compgen -W "start stop restart status logs run install-service uninstall-service --help" -- "$cur"))
			else
				COMPREPLY=($(compgen -W "start stop restart status logs --help" -- "$cur"))
			fi ;;
		restart) COMPREPLY=($(compgen -W "all $components" -- "$cur")) ;;
		status) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
		logs)
			if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "--follow --tail --since --no-color" -- "$cur"))
			else COMPREPLY=($(compgen -W "$components supervisor" -- "$cur")); fi ;;
		run) COMPREPLY=($(compgen -W "--no-echo" -- "$cur")) ;;
		install-service | uninstall-service) COMPREPLY=($(compgen -W "--system --dry-run" -- "$cur")) ;;
		esac ;;
	executions)
		case $sub in
		"") COMPREPLY=($(compgen -W "list show cancel logs --help" -- "$cur")) ;;
		list) COMPREPLY=($(compgen -W "--state --limit --json" -- "$cur")) ;;
		show) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
		logs) COMPREPLY=($(compgen -W "--follow" -- "$cur")) ;;
		esac ;;
	run)
		if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "--input --detach --help" -- "$cur"))
		else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
	version) COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
	esac
}
complete -F _stigmer stigmer
